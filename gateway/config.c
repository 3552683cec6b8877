/* The gateway's one settings table: flags, INGEST_* variables and --help. */
#include <stddef.h>

#include "gateway.h"

static const char *const ack_levels[] = {"committed", "accepted", "persisted", NULL};
static const char *const spool_modes[] = {"off", "always", NULL};
static const char *const client_auth_modes[] = {"none", "optional", "require", NULL};

#define OFF(m) offsetof(gateway_config, m)

static const config_entry entries[] = {
    CONFIG_COMMON_ENTRIES(gateway_config),
    {"kafka-topic", CONFIG_STRING, "events", OFF(kafka_topic), "Topic the events are produced to", 0, 0,
     NULL},
    {"gateway-id", CONFIG_STRING, "", OFF(gateway_id),
     "This instance's name in every Envelope (empty: the host name)", 0, 0, NULL},
    {"http-addr", CONFIG_STRING, "[::]:8080", OFF(http_addr),
     "HTTP listen address (host:port, [ipv6]:port); [::] is IPv4 and IPv6 (0.0.0.0 without IPv6)", 0, 0,
     NULL},
    {"http-threads", CONFIG_INT, "2", OFF(http_threads),
     "HTTP I/O threads, each with its own event loop and socket", 1, 64, NULL},
    {"http-idle-timeout", CONFIG_DURATION, "60s", OFF(http_idle_timeout_ms),
     "Close a connection idle (or stalled mid-request) for this long", 100, 3600000, NULL},
    {"http-header-timeout", CONFIG_DURATION, "10s", OFF(http_header_timeout_ms),
     "Longest a request's line and headers may take to arrive, whatever the pace; then 408 and the "
     "connection is closed",
     100, 3600000, NULL},
    {"http-min-body-rate", CONFIG_BYTES, "1KiB", OFF(http_min_body_rate),
     "Slowest a request body may arrive, in bytes a second over the whole body after "
     "--http-header-timeout's grace, and with no pause as long as that timeout; slower: 408 and the "
     "connection is closed (0: no minimum)",
     0, 1073741824, NULL},
    {"max-connections", CONFIG_INT, "8192", OFF(max_connections),
     "Most connections open at once on each TCP port (HTTP, gRPC); more are closed at once and counted", 1,
     1048576, NULL},
    {"tls-cert", CONFIG_STRING, "", OFF(tls_cert),
     "PEM certificate (the server's first, then any intermediates) for TLS on the HTTP and gRPC ports "
     "(empty: plaintext); the admin port stays plaintext",
     0, 0, NULL},
    {"tls-key", CONFIG_STRING, "", OFF(tls_key), "PEM private key of --tls-cert (not passphrase-protected)",
     0, 0, NULL},
    {"tls-client-ca", CONFIG_STRING, "", OFF(tls_client_ca),
     "PEM bundle of the CAs client certificates must chain to (with --tls-client-auth)", 0, 0, NULL},
    {"tls-client-auth", CONFIG_STRING, "none", OFF(tls_client_auth),
     "Client certificates on the HTTP and gRPC ports: none (not asked for), optional (asked for; one sent "
     "must "
     "verify), require (no valid certificate, no connection)",
     0, 0, client_auth_modes},
    {"tls-ciphers", CONFIG_STRING, "ECDHE+AESGCM:ECDHE+CHACHA20", OFF(tls_ciphers),
     "TLS 1.2 cipher list (OpenSSL's syntax), both ports (gRPC: as GRPC_SSL_CIPHER_SUITES); TLS 1.3 uses "
     "OpenSSL's default suites",
     0, 0, NULL},
    {"reload-interval", CONFIG_DURATION, "0", OFF(reload_interval_ms),
     "How often the files of --tls-cert, --tls-key, --tls-client-ca and --auth-file are checked for a change "
     "(device, "
     "inode, mtime, size; a Kubernetes Secret's symlink swap too), and reloaded when changed (0: only on "
     "SIGHUP)",
     0, 86400000, NULL},
    {"http-overload-wait", CONFIG_DURATION, "1s", OFF(http_overload_wait_ms),
     "How long a request read while the queue is above its high-water mark waits for room (its connection "
     "read no further) before it is answered 429",
     0, 60000, NULL},
    {"cors-origins", CONFIG_STRING, "", OFF(cors_origins),
     "Web origins whose pages may POST /v1/events from a browser: comma-separated, exact "
     "(https://app.example.com), or * for any (empty: CORS off)",
     0, 0, NULL},
    {"cors-credentials", CONFIG_BOOL, "false", OFF(cors_credentials),
     "Let pages of --cors-origins send with credentials (cookies, client certificates): "
     "Access-Control-Allow-Credentials: true (not with --cors-origins *)",
     0, 0, NULL},
    {"admin-addr", CONFIG_STRING, "[::]:8081", OFF(admin_addr),
     "Admin listen address (as --http-addr): /metrics, /healthz, /readyz", 0, 0, NULL},
    {"udp-addr", CONFIG_STRING, "[::]:8090", OFF(udp_addr),
     "UDP listen address (host:port, [ipv6]:port); [::] is IPv4 and IPv6 (0.0.0.0 without IPv6)", 0, 0, NULL},
    {"udp-threads", CONFIG_INT, "2", OFF(udp_threads),
     "UDP receive threads, each with its own SO_REUSEPORT socket (the kernel picks one by the sender's "
     "address and port)",
     1, 64, NULL},
    {"udp-rcvbuf", CONFIG_BYTES, "4MiB", OFF(udp_rcvbuf),
     "Socket receive buffer of each UDP socket (past net.core.rmem_max only with CAP_NET_ADMIN)", 4096,
     1073741824, NULL},
    {"udp-max-datagram", CONFIG_BYTES, "65535", OFF(udp_max_datagram),
     "Largest datagram taken whole; a longer one is dropped as truncated", 512, 65535, NULL},
    {"grpc-addr", CONFIG_STRING, "[::]:50051", OFF(grpc_addr),
     "gRPC listen address (host:port, [ipv6]:port); [::] is IPv4 and IPv6 (0.0.0.0 without IPv6)", 0, 0,
     NULL},
    /*
     * Two: a thread that parses, validates and encodes a 10,000-event batch
     * (milliseconds) leaves the other polling, so other calls' acks and
     * small requests are not held up behind it; each call has its own lock.
     */
    {"grpc-threads", CONFIG_INT, "2", OFF(grpc_threads),
     "gRPC completion-queue threads (calls are parsed and answered on them)", 1, 64, NULL},
    {"grpc-max-connection-idle", CONFIG_DURATION, "5m", OFF(grpc_max_connection_idle_ms),
     "Close a gRPC connection without calls for this long (GOAWAY)", 1000, 86400000, NULL},
    {"grpc-message-timeout", CONFIG_DURATION, "30s", OFF(grpc_message_timeout_ms),
     "Longest a unary call's request message may take to arrive after its headers; then DEADLINE_EXCEEDED "
     "(sooner, after 1 s, while other calls wait for memory to read theirs: RESOURCE_EXHAUSTED, oldest "
     "first)",
     100, 3600000, NULL},
    {"grpc-handshake-timeout", CONFIG_DURATION, "10s", OFF(grpc_handshake_timeout_ms),
     "Longest a new gRPC connection may take to finish its TLS handshake (with --tls-cert) and HTTP/2 "
     "preface; then it is closed",
     100, 3600000, NULL},
    {"grpc-max-connection-age", CONFIG_DURATION, "0", OFF(grpc_max_connection_age_ms),
     "Ask a gRPC client to reconnect after this long (GOAWAY; spreads load after scaling out; 0: never)", 0,
     86400000, NULL},
    {"producer-threads", CONFIG_INT, "1", OFF(producer_threads),
     "Threads handing queued events to librdkafka", 1, 64, NULL},
    {"max-event-bytes", CONFIG_BYTES, "1MiB", OFF(max_event_bytes), "Largest event, attributes and data", 64,
     1073741824, NULL},
    {"max-request-bytes", CONFIG_BYTES, "8MiB", OFF(max_request_bytes),
     "Largest request body, after gzip decoding", 64, 1073741824, NULL},
    {"max-batch-events", CONFIG_INT, "10000", OFF(max_batch_events), "Most events in one request", 1, 1000000,
     NULL},
    {"ack-timeout", CONFIG_DURATION, "10s", OFF(ack_timeout_ms),
     "How long a committed request waits for Kafka before answering 503", 1, 3600000, NULL},
    {"default-ack", CONFIG_STRING, "committed", OFF(default_ack),
     "Acknowledgement when the request names none: committed (Kafka has it), accepted (queued), persisted "
     "(in the spool, or Kafka; without a spool as committed)",
     0, 0, ack_levels},
    {"auth-token", CONFIG_STRING, "", OFF(auth_token),
     "Shorthand for an --auth-file with principal `default` (this bearer token; http and grpc) and "
     "`anonymous` (udp only): HTTP and gRPC requests must carry it (empty: no authentication; not with "
     "--auth-file)",
     0, 0, NULL},
    {"auth-file", CONFIG_STRING, "", OFF(auth_file),
     "File of principals: bearer token hashes, client certificate identities, allowed protocols and source "
     "prefixes, quotas (docs/security.md; empty: no principals, everyone is anonymous)",
     0, 0, NULL},
    {"retry-after", CONFIG_INT, "1", OFF(retry_after_s), "Seconds in Retry-After of 429 and 503 answers", 0,
     3600, NULL},
    {"queue-capacity", CONFIG_INT, "65536", OFF(queue_capacity),
     "Events the shared worker queue holds at most", 1, 16777216, NULL},
    {"queue-high-water", CONFIG_INT, "52428", OFF(queue_high_water),
     "Queue depth from which new requests are refused (HTTP 429), at most the capacity", 1, 16777216, NULL},
    {"memory-budget", CONFIG_BYTES, "512MiB", OFF(memory_budget),
     "Memory clients can make the gateway hold: 1/4 for librdkafka's buffer, 1/4 for queued events, 1/2 "
     "for request bodies being read and acks owed (a connection at most 1/16); set it to about half the "
     "container's memory limit",
     16777216, (size_t)1 << 40, NULL},
    {"spool-dir", CONFIG_STRING, "", OFF(spool_dir),
     "Directory of the durable spool (created when its parent exists; one gateway at a time, locked); "
     "empty: no spool",
     0, 0, NULL},
    {"spool", CONFIG_STRING, "off", OFF(spool_mode),
     "off, or always: every event is written to --spool-dir (group commit) before it is queued for Kafka, "
     "and what Kafka had not acknowledged is sent again at the next start",
     0, 0, spool_modes},
    {"spool-max-bytes", CONFIG_BYTES, "1GiB", OFF(spool_max_bytes),
     "Most the spool holds on disk; when full, new requests are refused as overloaded (429)", 65536,
     (size_t)1 << 50, NULL},
    {"spool-max-age", CONFIG_DURATION, "0", OFF(spool_max_age_ms),
     "Spooled events older than this are not sent again at a start (0: never too old)", 0,
     (int64_t)365 * 86400000, NULL},
    {"shutdown-timeout", CONFIG_DURATION, "30s", OFF(shutdown_timeout_ms),
     "Longest a stop may take to drain the queue and flush Kafka", 0, 3600000, NULL},
};

const config_program gateway_config_program = {
    .name = "gateway",
    .summary = "Accepts CloudEvents over HTTP, UDP and gRPC and produces them to Kafka.",
    .entries = entries,
    .n_entries = sizeof(entries) / sizeof(entries[0]),
    .props_offset = OFF(kafka_props),
};
