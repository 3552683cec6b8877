/*
 * TLS for the HTTP and gRPC ports, from the --tls-* settings: TLS 1.2 and
 * 1.3 only; ALPN http/1.1 on the HTTP port (h2 on gRPC's, the core's own).
 *
 * What is in force is one gw_tls: the HTTP threads' server SSL_CTX and the
 * gRPC core's certificate config, loaded together from the same files and
 * swapped together by a reload (reload.h), so the two ports never serve
 * different certificates for long. A connection keeps the context it was
 * accepted with (its SSL holds a reference): a swap only changes what new
 * connections get.
 */
#ifndef INGEST_GATEWAY_TLS_H
#define INGEST_GATEWAY_TLS_H

#include <stddef.h>

#include <grpc/grpc_security_constants.h>

#include "gateway.h"

struct ssl_ctx_st;
struct ssl_st;
struct grpc_ssl_server_certificate_config;

typedef struct gw_tls gw_tls;

/*
 * The context --tls-cert and its companions describe, in *ctx (NULL: no
 * --tls-cert, plaintext). 0, or -1 with one line naming the setting and
 * the file at fault in err: the caller exits 2.
 */
int gw_tls_server_ctx(const gateway_config *cfg, struct ssl_ctx_st **ctx, char *err, size_t errlen);

/*
 * TLS from the files, in *out (NULL: no --tls-cert, plaintext). 0, or -1
 * with one line in err, as gw_tls_server_ctx(). cfg must outlive *out: a
 * reload reads the same paths again.
 */
int gw_tls_open(const gateway_config *cfg, gw_tls **out, char *err, size_t errlen);
void gw_tls_free(gw_tls *t);

/* A new server SSL for an accepted HTTP connection, from the context in force now; NULL: out of memory. */
struct ssl_st *gw_tls_accept_ssl(gw_tls *t);

/*
 * The gRPC core's certificate-config fetcher
 * (grpc_ssl_server_credentials_create_options_using_config_fetcher, with t
 * as user_data): the config loaded since the last call, or "unchanged". The
 * core asks at the port's creation and before each new connection's
 * handshake, on its own threads.
 */
grpc_ssl_certificate_config_reload_status
gw_tls_grpc_fetch(void *t, struct grpc_ssl_server_certificate_config **config);

/*
 * A reload, in reload.h's two steps (arg: the gw_tls). load reads the files
 * again and checks them all (chain, key against certificate, client CAs)
 * for both ports, so nothing half-broken is ever swapped in: the new set,
 * or NULL with one line in err. swap puts a loaded set in force.
 */
void *gw_tls_reload_load(void *arg, char *err, size_t errlen);
void gw_tls_reload_swap(void *arg, void *set);

/* The files a reload reads (up to 3, NULL-terminated, into files[4]): what a change is watched on. */
void gw_tls_files(const gw_tls *t, const char *files[4]);

#endif
