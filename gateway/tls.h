/*
 * TLS for the HTTP port: one server SSL_CTX built from the --tls-* settings
 * at start, shared read-only by every HTTP thread (OpenSSL makes SSL_new on
 * a shared context safe). TLS 1.2 and 1.3 only; ALPN http/1.1 only.
 */
#ifndef INGEST_GATEWAY_TLS_H
#define INGEST_GATEWAY_TLS_H

#include <stddef.h>

#include "gateway.h"

struct ssl_ctx_st;

/*
 * The context --tls-cert and its companions describe, in *ctx (NULL: no
 * --tls-cert, plaintext). 0, or -1 with one line naming the setting and
 * the file at fault in err: the caller exits 2.
 */
int gw_tls_server_ctx(const gateway_config *cfg, struct ssl_ctx_st **ctx, char *err, size_t errlen);

void gw_tls_ctx_free(struct ssl_ctx_st *ctx);

#endif
