# syntax=docker/dockerfile:1
# Images of the gateway and the sink, on Debian 12 as the local set-up is:
#   docker build --target gateway -t ingest-gateway:0.1.0 .
#   docker build --target sink    -t ingest-sink:0.1.0 .
# Two targets from one build rather than one image with both programs: each
# image carries only the libraries its program loads (libpq brings Kerberos,
# LDAP and GnuTLS, which the gateway never uses; the sink needs neither gRPC
# nor jemalloc), so each is smaller and a CVE scan of it reports only what
# that program can reach. The build stage is shared, so both come from one
# compile. tests/integration/test_helm.py checks the runtime package lists
# below against `ldd` of the binaries and the build list against
# deploy/local/lib.sh.

FROM debian:bookworm AS build
# The -dev packages of deploy/local/lib.sh's LOCAL_PACKAGES (cmocka and
# json-c too: CMakeLists.txt requires them to configure, for the unit tests),
# but clang's runtimes, which only tests/fuzz needs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build pkg-config gcc libc6-dev g++ make libssl-dev curl ca-certificates \
      libevent-dev protobuf-c-compiler libprotobuf-c-dev \
      libprotobuf-dev protobuf-compiler librdkafka-dev libpq-dev \
      libcmocka-dev libjson-c-dev libjansson-dev zlib1g-dev libhttp-parser-dev libjemalloc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The gRPC C core (deploy/local/grpc-core says which and why), in a layer of
# its own that only a change of that script rebuilds: a quarter of an hour.
COPY deploy/local/grpc-core deploy/local/grpc-core
RUN deploy/local/grpc-core /opt/grpc-core >/opt/grpc-core.prefix
# Only what the programs are built from (.dockerignore keeps the rest out),
# so that editing tests or docs does not invalidate the compile layer.
COPY CMakeLists.txt ./
COPY proto proto
COPY common common
COPY gateway gateway
COPY sink sink
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DINGEST_GRPC_PREFIX="$(cat /opt/grpc-core.prefix)" \
 && cmake --build build --target gateway sink \
 && strip build/bin/gateway build/bin/sink

# What both programs load: librdkafka, protobuf-c, libevent; CA certificates
# for Kafka over TLS (security.protocol=SSL/SASL_SSL) and Postgres sslmode=verify-full.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates librdkafka1 libprotobuf-c1 \
      libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ingest \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ingest
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# The gRPC core is linked in (static, built in the build stage); it needs
# OpenSSL, zlib and the C++ runtime. The HTTP port's TLS needs libevent's
# OpenSSL bufferevents, over the same OpenSSL.
FROM runtime AS gateway
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libssl3 libevent-openssl-2.1-7 libstdc++6 libhttp-parser2.9 libjemalloc2 zlib1g \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build /src/build/bin/gateway /usr/local/bin/gateway
# HTTP, UDP, gRPC, admin (/metrics, /healthz, /readyz).
EXPOSE 8080/tcp 8090/udp 50051/tcp 8081/tcp
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS sink
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build /src/build/bin/sink /usr/local/bin/sink
# Admin (/metrics, /healthz, /readyz).
EXPOSE 8082/tcp
ENTRYPOINT ["/usr/local/bin/sink"]
