# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this
# Shared by deploy/local/up, deploy/local/down and tests/run: the one place that
# knows which Debian packages the project needs, where the local stack lives,
# which ports it uses, and how its processes are started and stopped.
#
# Layout (all under the git-ignored .local/ at the repository root):
#   .local/env          KEY=value lines for clients and tests (sourceable)
#   .local/run/*.pid    pids of the processes up started
#   .local/log/         kafka.log (log4j), kafka.out (JVM), postgres.log,
#                       gateway.log, sink.log
#   .local/kafka/libs/  Kafka jars resolved from Maven Central
#   .local/kafka/data/  the KRaft broker's storage (formatted once)
#   .local/pg/data/     the throw-away Postgres cluster (owned by postgres)
#   .local/venv/        Python virtualenv for tests/integration
#   .local/bin/grpcurl  gRPC command-line client for tests/integration
#   .local/grpc-core/   the gRPC C core's sdist and its build, <version>/ the
#                       install the programs link (deploy/local/grpc-core)
#
# Knobs, all optional:
#   INGEST_LOCAL_KAFKA_PORT (9092), INGEST_LOCAL_KAFKA_CONTROLLER_PORT (9093),
#   INGEST_LOCAL_PG_PORT (5432), INGEST_LOCAL_HTTP_PORT (8080),
#   INGEST_LOCAL_UDP_PORT (8090), INGEST_LOCAL_GRPC_PORT (50051),
#   INGEST_LOCAL_GATEWAY_ADMIN_PORT (8081), INGEST_LOCAL_SINK_ADMIN_PORT (8082),
#   INGEST_LOCAL_KAFKA_HEAP ("-Xms256m -Xmx1g"),
#   INGEST_LOCAL_TIMEOUT (60: seconds to wait for each service to come up),
#   INGEST_LOCAL_SKIP_APPS=1: do not build or start gateway and sink (only
#     Kafka and Postgres); for working on the stack before the C code builds.

if [[ -n "${INGEST_LIB_LOADED:-}" ]]; then
	return 0
fi
INGEST_LIB_LOADED=1

INGEST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL_DIR=$INGEST_ROOT/.local
RUN_DIR=$LOCAL_DIR/run
LOG_DIR=$LOCAL_DIR/log
ENV_FILE=$LOCAL_DIR/env
KAFKA_HOME=$LOCAL_DIR/kafka
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_DATA=$KAFKA_HOME/data
KAFKA_CONF_SRC=$INGEST_ROOT/deploy/local/kafka
PG_HOME=$LOCAL_DIR/pg
PG_DATA=$PG_HOME/data
BIN_DIR=$INGEST_ROOT/build/release/bin

KAFKA_PORT=${INGEST_LOCAL_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${INGEST_LOCAL_KAFKA_CONTROLLER_PORT:-9093}
PG_PORT=${INGEST_LOCAL_PG_PORT:-5432}
HTTP_PORT=${INGEST_LOCAL_HTTP_PORT:-8080}
UDP_PORT=${INGEST_LOCAL_UDP_PORT:-8090}
GRPC_PORT=${INGEST_LOCAL_GRPC_PORT:-50051}
GATEWAY_ADMIN_PORT=${INGEST_LOCAL_GATEWAY_ADMIN_PORT:-8081}
SINK_ADMIN_PORT=${INGEST_LOCAL_SINK_ADMIN_PORT:-8082}
LOCAL_TIMEOUT=${INGEST_LOCAL_TIMEOUT:-60}

TOPIC=events
DLQ_TOPIC=events.dlq
TOPIC_PARTITIONS=6
DLQ_PARTITIONS=1
# Both topics' max.message.bytes: 2 MiB + 64 KiB. The largest record a
# gateway with the default --max-event-bytes (1 MiB) can make is 2,099,666
# bytes plus its id's length (it logs the figure when its topic takes less:
# docs/operating.md); the broker's own default (1 MiB + 12) would refuse
# events the gateway accepts.
TOPIC_MAX_MESSAGE_BYTES=2162688
PG_DB=ingest
PG_USER=ingest
PG_PASSWORD=ingest

# Everything the build, the local stack and the tests need from Debian, in one
# list. gcc's libc6-dev is a Recommends, so it is named since we install
# without recommends; so is libclang-rt-14-dev, clang's sanitizer and
# libFuzzer runtimes (-fsanitize=fuzzer, for tests/fuzz). openssl, the command,
# makes tests/integration/test_tls.py's certificates and is its s_client.
LOCAL_PACKAGES=(
	cmake ninja-build pkg-config gcc libc6-dev g++ make libssl-dev
	libevent-dev protobuf-c-compiler libprotobuf-c-dev
	libprotobuf-dev protobuf-compiler librdkafka-dev libpq-dev
	libcmocka-dev libjson-c-dev libjansson-dev zlib1g-dev libhttp-parser-dev libjemalloc-dev clang-format
	clang libclang-rt-14-dev
	postgresql python3-venv openjdk-17-jre-headless maven curl ca-certificates
	openssl
)

LOG_PREFIX=${LOG_PREFIX:-local}

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
	printf '[%s] error: %s\n' "$LOG_PREFIX" "$*" >&2
	exit 1
}

# Installs whatever of LOCAL_PACKAGES is missing. One dpkg-query when all
# are present, so warm runs do not touch apt at all.
ensure_packages() {
	local installed missing=() p
	# Unknown packages print nothing and make dpkg-query fail: hence || true.
	installed=" $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${LOCAL_PACKAGES[@]}" 2>/dev/null |
		awk '$1 == "ii" { printf "%s ", $2 }' || true)"
	for p in "${LOCAL_PACKAGES[@]}"; do
		[[ "$installed" == *" $p "* ]] || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	if ((EUID != 0)); then
		die "missing Debian packages: ${missing[*]} (run as root, or install them)"
	fi
	log "installing missing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# grpcurl, the independent gRPC client of tests/integration/test_grpc.py:
# built by `go install` from the Go module proxy into .local/bin, at the
# version pinned here (rebuilt only when the binary's module version
# differs). Needs Go 1.25 or later on the machine (PATH or /usr/local/go;
# Debian's golang-go is 1.19); GOTOOLCHAIN=local: no toolchain download.
GRPCURL_VERSION=v1.9.4
GRPCURL_BIN=$LOCAL_DIR/bin/grpcurl

ensure_grpcurl() {
	local go
	go=$(command -v go || echo /usr/local/go/bin/go)
	[[ -x "$go" ]] || die "Go (1.25 or later) is needed to install grpcurl (go install)"
	if "$go" version -m "$GRPCURL_BIN" 2>/dev/null |
		grep -qP "^\tmod\tgithub\.com/fullstorydev/grpcurl\t\Q$GRPCURL_VERSION\E\t"; then
		return 0
	fi
	log "installing grpcurl $GRPCURL_VERSION into .local/bin (go install)"
	mkdir -p "$LOCAL_DIR/bin"
	GOBIN="$LOCAL_DIR/bin" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
		"$go" install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
}

java_bin() {
	local j
	for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
		if [[ -x "$j" ]]; then
			printf '%s\n' "$j"
			return 0
		fi
	done
	command -v java || die "no java found"
}

pg_bin() {
	local d
	d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	[[ -n "$d" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
	printf '%s\n' "$d"
}

# The gRPC C core the gateway links (deploy/local/grpc-core says why and
# how): built once into .local/grpc-core/<version>, whose path this prints.
# The first run on a machine takes a quarter of an hour or more; later ones a
# checksum.
ensure_grpc_core() {
	"$INGEST_ROOT/deploy/local/grpc-core" "$LOCAL_DIR/grpc-core"
}

build_release() {
	local grpc
	grpc=$(ensure_grpc_core) || return 1
	log "building Release (build/release)"
	cmake -S "$INGEST_ROOT" -B "$INGEST_ROOT/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DINGEST_GRPC_PREFIX="$grpc" >/dev/null
	cmake --build "$INGEST_ROOT/build/release"
}

# True when 127.0.0.1:$1 accepts TCP connections.
port_open() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# ---- processes --------------------------------------------------------------
# A pid file alone is not trusted: the pid may have been reused. Each process
# is recognised by a string of its command line that holds this checkout's
# absolute paths, so two checkouts never stop each other's stack.

proc_marker() {
	case $1 in
	kafka) printf '%s\n' "$KAFKA_HOME/server.properties" ;;
	postgres) printf '%s\n' "$PG_DATA" ;;
	gateway | sink) printf '%s\n' "$BIN_DIR/$1" ;;
	# A foreground `up`: its command line may hold a relative path.
	up) printf '%s\n' "deploy/local/up" ;;
	*) die "unknown process $1" ;;
	esac
}

pid_file() {
	if [[ $1 == postgres ]]; then
		printf '%s\n' "$PG_DATA/postmaster.pid"
	else
		printf '%s\n' "$RUN_DIR/$1.pid"
	fi
}

# pid_alive PID MARKER: the process exists, is not a zombie (empty cmdline)
# and its command line contains MARKER.
pid_alive() {
	local cmdline
	[[ "$1" =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ "$cmdline" == *"$2"* ]]
}

# running NAME: prints the pid of our NAME process if it runs; removes a
# stale pid file (postgres's own postmaster.pid is left to pg_ctl).
running() {
	local f pid
	f=$(pid_file "$1")
	[[ -f "$f" ]] || return 1
	pid=$(head -n 1 "$f" 2>/dev/null || true)
	if pid_alive "$pid" "$(proc_marker "$1")"; then
		printf '%s\n' "$pid"
		return 0
	fi
	if [[ $1 != postgres ]]; then
		rm -f "$f"
	fi
	return 1
}

# spawn NAME LOGFILE CMD...: runs CMD in its own session (so a Ctrl-C on the
# terminal reaches only `up`, which then stops everything in order), with no
# stdin and its output appended to LOGFILE; records its pid. The pid is
# written by the process itself before it execs CMD, because setsid forks
# when the caller is a process-group leader and $! would then be wrong.
spawn() {
	local name=$1 logfile=$2 pidf i
	shift 2
	pidf=$(pid_file "$name")
	rm -f "$pidf"
	# shellcheck disable=SC2016 # expanded by the inner bash
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$@" </dev/null >>"$logfile" 2>&1 &
	for ((i = 0; i < 50; i++)); do
		[[ -s "$pidf" ]] && return 0
		sleep 0.1
	done
	die "$name did not start (see $logfile)"
}

# stop_process NAME SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_process() {
	local name=$1 secs=$2 pid marker i
	pid=$(running "$name") || return 0
	marker=$(proc_marker "$name")
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		pid_alive "$pid" "$marker" || break
		sleep 0.1
	done
	if pid_alive "$pid" "$marker"; then
		log "$name did not stop within ${secs}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			pid_alive "$pid" "$marker" || break
			sleep 0.1
		done
	fi
	rm -f "$(pid_file "$name")"
}

stop_postgres() {
	local pid
	pid=$(running postgres) || return 0
	log "stopping postgres (pid $pid)"
	if ! (cd / && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DATA" stop -m fast -w -t 30 >/dev/null); then
		log "pg_ctl stop failed; sending SIGQUIT (immediate shutdown)"
		kill -QUIT "$pid" 2>/dev/null || true
		sleep 2
	fi
}

# Stops whatever of the stack runs, in the order that loses nothing: the
# gateway drains into Kafka, the sink commits to Postgres, then the two
# servers. Safe to call when nothing runs.
stack_down() {
	stop_process gateway 30
	stop_process sink 30
	stop_process kafka 30
	stop_postgres
}

# ---- the Kafka broker alone --------------------------------------------------
# deploy/local/up starts the broker with these; tests/integration/kafka_ctl
# stops and restarts it under a running stack (failure tests). Both need
# .local/kafka/server.properties and formatted storage, which up writes.

# The CLI tools start in well under a second with these flags.
kafka_tool() {
	"${JAVA:=$(java_bin)}" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$KAFKA_CONF_SRC/tools-log4j2.properties" \
		-cp "$KAFKA_LIBS/*" "$@"
}

# Starts the broker process on the server.properties up wrote.
kafka_spawn() {
	local heap
	log "starting Kafka on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
	read -ra heap <<<"${INGEST_LOCAL_KAFKA_HEAP:--Xms256m -Xmx1g}"
	spawn kafka "$LOG_DIR/kafka.out" "${JAVA:=$(java_bin)}" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$KAFKA_CONF_SRC/log4j2.properties" \
		-Dkafka.logs.dir="$LOG_DIR" \
		-cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties"
}

# Waits until the broker's admin API answers and prints the topic list; dies
# if the broker exits or does not answer within LOCAL_TIMEOUT.
kafka_wait_ready() {
	local deadline=$((SECONDS + LOCAL_TIMEOUT)) topics
	while :; do
		if ! running kafka >/dev/null; then
			log_tail "$LOG_DIR/kafka.out"
			log_tail "$LOG_DIR/kafka.log"
			die "Kafka exited during start-up"
		fi
		if port_open "$KAFKA_PORT" &&
			topics=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
				--command-config "$KAFKA_HOME/tools-client.properties" --list 2>>"$LOG_DIR/kafka-tools.log"); then
			printf '%s\n' "$topics"
			return 0
		fi
		if ((SECONDS >= deadline)); then
			log_tail "$LOG_DIR/kafka.log"
			die "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${LOCAL_TIMEOUT}s"
		fi
		sleep 0.5
	done
}

# ---- Postgres alone ------------------------------------------------------------
# deploy/local/up creates the cluster and starts it with this;
# tests/integration/pg_ctl stops and restarts it under a running stack (the
# sink's outage tests). Needs the cluster up created in .local/pg/data.

# Starts the postmaster and returns once it accepts connections; dies if it
# does not within LOCAL_TIMEOUT. setsid: a Ctrl-C on up's terminal must not
# reach the postmaster.
postgres_spawn() {
	touch "$LOG_DIR/postgres.log"
	chown postgres:postgres "$LOG_DIR/postgres.log"
	log "starting Postgres on 127.0.0.1:$PG_PORT"
	if ! (cd / && setsid -w runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DATA" \
		-l "$LOG_DIR/postgres.log" -w -t "$LOCAL_TIMEOUT" start) </dev/null >/dev/null 2>&1; then
		log_tail "$LOG_DIR/postgres.log"
		die "Postgres did not start"
	fi
}

# ---- helm and the manifest validator (tests/integration/test_helm.py) --------
HELM_VERSION=v3.22.0
TOOLS_BIN=$LOCAL_DIR/bin

# Installs helm with `go install` from the Go module proxy and builds the
# validator of tests/k8s, both into .local/bin, each only when missing or out
# of date: a warm run costs a `go version -m` and a checksum. Go's own module
# and build caches are used, so other checkouts on the machine share them.
ensure_k8s_tools() {
	local go want
	go=$(command -v go || echo /usr/local/go/bin/go)
	[[ -x "$go" ]] || die "Go (1.24 or later) is needed to install helm and build tests/k8s"
	mkdir -p "$TOOLS_BIN"
	if ! "$go" version -m "$TOOLS_BIN/helm" 2>/dev/null | grep -qP "^\tmod\thelm\.sh/helm/v3\t\Q$HELM_VERSION\E\t"; then
		log "installing helm $HELM_VERSION into .local/bin (go install)"
		GOBIN=$TOOLS_BIN GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
			"$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	fi
	want=$(cat "$INGEST_ROOT"/tests/k8s/go.mod "$INGEST_ROOT"/tests/k8s/go.sum "$INGEST_ROOT"/tests/k8s/*.go |
		sha256sum | cut -d' ' -f1)
	if [[ ! -x "$TOOLS_BIN/k8s-validate" || "$(cat "$TOOLS_BIN/k8s-validate.stamp" 2>/dev/null)" != "$want" ]]; then
		log "building tests/k8s into .local/bin/k8s-validate"
		(cd "$INGEST_ROOT/tests/k8s" && GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
			"$go" build -o "$TOOLS_BIN/k8s-validate" .)
		printf '%s\n' "$want" >"$TOOLS_BIN/k8s-validate.stamp"
	fi
}

# Prints the last lines of a log, indented, for error messages.
log_tail() {
	if [[ -f "$1" ]]; then
		printf '  --- last lines of %s ---\n' "$1" >&2
		tail -n "${2:-25}" "$1" | sed 's/^/  | /' >&2
	fi
}
