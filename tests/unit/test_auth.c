/*
 * gateway/auth: the auth file's parser (what it takes, what it refuses and
 * on which line), the constant-time compare, token lookup across
 * principals, certificate and source matching, the --auth-token shorthand,
 * and the reference-counted swap.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "auth.h"
#include "gateway.h"

/* "sha256:" and the hex of SHA-256(token), into out[72]. */
static const char *hash_of(const char *token, char out[72])
{
    unsigned char h[32];
    SHA256((const unsigned char *)token, strlen(token), h);
    strcpy(out, "sha256:");
    for (int i = 0; i < 32; i++)
        sprintf(out + 7 + 2 * i, "%02x", h[i]);
    return out;
}

static gw_auth *parse(const char *text, char *err, size_t errlen)
{
    return gw_auth_parse(text, strlen(text), "auth.conf", err, errlen);
}

static const gw_principal *by_token(const gw_auth *a, const char *t)
{
    return gw_auth_by_token(a, t, strlen(t));
}

static void test_ct_equal(void **state)
{
    unsigned char x[32], y[32];
    (void)state;

    for (int i = 0; i < 32; i++)
        x[i] = y[i] = (unsigned char)(i * 7);
    assert_int_equal(gw_auth_ct_equal(x, y, 32), 1);
    assert_int_equal(gw_auth_ct_equal(x, y, 0), 1);
    /* Every position, and every bit of it, tells. */
    for (int i = 0; i < 32; i++)
        for (int b = 0; b < 8; b++) {
            y[i] ^= (unsigned char)(1u << b);
            assert_int_equal(gw_auth_ct_equal(x, y, 32), 0);
            y[i] ^= (unsigned char)(1u << b);
        }
    /* Many differences at once. */
    memset(y, 0xff, sizeof(y));
    assert_int_equal(gw_auth_ct_equal(x, y, 32), 0);
}

static void test_parse_a_full_file(void **state)
{
    char err[256], h1[72], h2[72], h3[72], text[2048];
    (void)state;

    snprintf(text, sizeof(text),
             "# principals of the test\n"
             "\n"
             "principal billing          # the billing service\n"
             "  token %s\n"
             "  token %s\n"
             "  cert subject CN=billing svc,O=Acme\\, Inc\n"
             "  cert san DNS:billing.acme.internal\n"
             "  cert san ip:10.0.0.1\n"
             "  source /billing/\n"
             "  source /shared/#1\n"
             "  protocols http grpc udp\n"
             "  rate 1000/s burst 2000\n"
             "  bytes 10MiB/s burst 20MiB\n"
             "principal shop.v2-x\n"
             "\ttoken %s\n"
             "\trate 60/m\n"
             "principal anonymous\n"
             "  protocols http udp\n"
             "  rate 0.5/s\n",
             hash_of("bill-1", h1), hash_of("bill-2", h2), hash_of("shop", h3));
    gw_auth *a = parse(text, err, sizeof(err));
    if (a == NULL)
        fail_msg("%s", err);
    assert_int_equal(a->n, 3);
    const gw_principal *b = &a->principals[0], *s = &a->principals[1], *anon = &a->principals[2];
    assert_string_equal(b->name, "billing");
    assert_string_equal(s->name, "shop.v2-x");
    assert_ptr_equal(a->anonymous, anon);
    assert_int_equal(b->n_subjects, 1);
    assert_string_equal(b->subjects[0], "CN=billing svc,O=Acme\\, Inc");
    assert_int_equal(b->n_sans, 2);
    assert_string_equal(b->sans[0], "DNS:billing.acme.internal");
    assert_string_equal(b->sans[1], "IP:10.0.0.1");
    assert_int_equal(b->n_sources, 2);
    assert_string_equal(b->sources[1], "/shared/#1"); /* '#' inside a word is no comment */
    assert_int_equal(b->protocols, (1u << GW_HTTP) | (1u << GW_GRPC) | (1u << GW_UDP));
    assert_true(b->rate == 1000 && b->rate_burst == 2000);
    assert_true(b->bytes_rate == 10 * 1048576.0 && b->bytes_burst == 20 * 1048576.0);
    /* Defaults: http grpc; burst the rate (at least 1); no line, no quota. */
    assert_int_equal(s->protocols, (1u << GW_HTTP) | (1u << GW_GRPC));
    assert_true(s->rate == 1 && s->rate_burst == 1);
    assert_true(s->bytes_rate == 0 && s->bytes_burst == 0);
    assert_int_equal(anon->protocols, (1u << GW_HTTP) | (1u << GW_UDP));
    assert_true(anon->rate == 0.5 && anon->rate_burst == 1);
    /* Tokens of several principals, each found; others not. */
    assert_ptr_equal(by_token(a, "bill-1"), b);
    assert_ptr_equal(by_token(a, "bill-2"), b);
    assert_ptr_equal(by_token(a, "shop"), s);
    assert_null(by_token(a, "shop "));
    assert_null(by_token(a, ""));
    assert_null(by_token(a, "bill-"));
    gw_auth_release(a);
}

static void test_anonymous_defaults_to_no_protocol(void **state)
{
    char err[256];
    (void)state;

    gw_auth *a = parse("principal anonymous\n", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(a->anonymous->protocols, 0);
    gw_auth_release(a);
    /* An empty file: nobody at all. */
    a = parse("# nothing\n", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(a->n, 0);
    assert_null(a->anonymous);
    gw_auth_release(a);
}

static void test_parse_errors_name_the_line(void **state)
{
    char h[72], dup[512];
    (void)state;
    hash_of("x", h);
    snprintf(dup, sizeof(dup), "principal a\n token %s\nprincipal b\n token %s\n", h, h);
    static const char tok[] =
        " token sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    char with_tok[8][256];
    const char *bodies[] = {" protocols http\n protocols grpc\n",
                            " rate 5/s\n rate 6/s\n",
                            " rate 5\n",
                            " rate 5/s burst\n",
                            " rate 5/s burst 0\n",
                            " bytes 1MiB/d\n",
                            " protocols smtp\n",
                            " cert san FTP:x\n"};
    for (int i = 0; i < 8; i++)
        snprintf(with_tok[i], sizeof(with_tok[i]), "principal p\n%s%s", tok, bodies[i]);
    const struct {
        const char *text, *want;
    } cases[] = {
        {"token sha256:00\n", "auth.conf:1: 'token' before any 'principal' line"},
        {"# c\nprincipal bad/name\n", "auth.conf:2: principal name 'bad/name'"},
        {"principal\n", "auth.conf:1: principal: expected one name"},
        {"principal a b\n", "auth.conf:1: principal: expected one name"},
        {"principal a\n token sha256:abc\n", "auth.conf:2: token: expected sha256:"},
        {"principal a\n token md5:0123\n", "auth.conf:2: token: expected sha256:"},
        {"principal a\n token sha256:zz00000000000000000000000000000000000000000000000000000000000000\n",
         "auth.conf:2: token: expected"},
        {"principal a\n cert subject CN=a\nprincipal a\n cert subject CN=b\n",
         "auth.conf:3: principal 'a' is defined twice"},
        {dup, "auth.conf:4: this token hash is already a's (line 2)"},
        {"principal anonymous\n token sha256:00\n", "auth.conf:2: anonymous has no token"},
        {"principal anonymous\n cert san DNS:x\n", "auth.conf:2: anonymous has no certificate"},
        {"principal a\n frobnicate\n", "auth.conf:2: unknown keyword 'frobnicate'"},
        {"principal a\n cert subject CN=a\n cert issuer x\n",
         "auth.conf:3: cert: expected 'subject' or 'san'"},
        {"principal a\n cert san IP:300.1.1.1\n", "auth.conf:2: cert san: '300.1.1.1' is not an IP address"},
        {"principal a\n", "auth.conf: principal 'a' has no token or cert line"},
        {with_tok[0], "auth.conf:4: a second 'protocols' line for p"},
        {with_tok[1], "auth.conf:4: a second 'rate' line for p"},
        {with_tok[2], "auth.conf:3: rate: expected events a period"},
        {with_tok[3], "auth.conf:3: rate: burst: expected a number"},
        {with_tok[4], "auth.conf:3: rate: burst: expected a number of at least 1"},
        {with_tok[5], "auth.conf:3: bytes: expected bytes a period"},
        {with_tok[6], "auth.conf:3: protocols: 'smtp' is not http, grpc or udp"},
        {with_tok[7], "auth.conf:3: cert san: expected DNS:, URI:, email: or IP:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        gw_auth *a = parse(cases[i].text, err, sizeof(err));
        if (a != NULL)
            fail_msg("case %zu was taken: %s", i, cases[i].text);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: got '%s', want '%s...'", i, err, cases[i].want);
        assert_null(strchr(err, '\n')); /* one line */
    }
}

static void test_load_reads_a_file_and_names_it(void **state)
{
    char path[] = "/tmp/test_auth_XXXXXX", err[256], h[72], text[256];
    (void)state;

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    snprintf(text, sizeof(text), "principal svc\n token %s\n source /svc/\n", hash_of("svc-token", h));
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    gw_auth *a = gw_auth_load(path, err, sizeof(err));
    assert_non_null(a);
    assert_string_equal(by_token(a, "svc-token")->name, "svc");
    gw_auth_release(a);
    /* A mistake names the file and its line. */
    FILE *f = fopen(path, "a");
    fputs("\nbogus\n", f);
    fclose(f);
    assert_null(gw_auth_load(path, err, sizeof(err)));
    char want[128];
    snprintf(want, sizeof(want), "%s:5: unknown keyword 'bogus'", path);
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
    unlink(path);
    assert_null(gw_auth_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file"));
}

static void test_token_shorthand_and_open(void **state)
{
    char err[256];
    (void)state;

    gw_auth *a = gw_auth_from_token("s3cret", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(a->n, 2);
    const gw_principal *d = by_token(a, "s3cret");
    assert_non_null(d);
    assert_string_equal(d->name, "default");
    assert_int_equal(d->protocols, (1u << GW_HTTP) | (1u << GW_GRPC));
    assert_int_equal(d->n_sources, 0);
    assert_true(d->rate == 0 && d->bytes_rate == 0);
    assert_int_equal(a->anonymous->protocols, 1u << GW_UDP);
    assert_null(by_token(a, "s3cre"));
    assert_false(a->ignore_tokens);
    gw_auth_release(a);

    a = gw_auth_open(err, sizeof(err));
    assert_non_null(a);
    assert_true(a->ignore_tokens);
    assert_int_equal(a->anonymous->protocols, (1u << GW_HTTP) | (1u << GW_GRPC) | (1u << GW_UDP));
    assert_true(gw_principal_source_allowed(a->anonymous, "/anything"));
    gw_auth_release(a);

    /* Both flags: refused with one line. */
    gateway_config cfg = {.auth_token = (char *)"t", .auth_file = (char *)"/etc/auth"};
    assert_null(gw_auth_from_config(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "--auth-file and --auth-token"));
}

static void test_source_prefixes(void **state)
{
    char err[256];
    (void)state;

    gw_auth *a =
        parse("principal p\n cert subject CN=p\n source /billing/\n source urn:acme:\n", err, sizeof(err));
    assert_non_null(a);
    const gw_principal *p = &a->principals[0];
    assert_true(gw_principal_source_allowed(p, "/billing/"));
    assert_true(gw_principal_source_allowed(p, "/billing/eu/1"));
    assert_true(gw_principal_source_allowed(p, "urn:acme:x"));
    assert_false(gw_principal_source_allowed(p, "/billing"));
    assert_false(gw_principal_source_allowed(p, "/other/billing/"));
    assert_false(gw_principal_source_allowed(p, ""));
    gw_auth_release(a);
}

/* A self-signed certificate with this subject CN and these SANs (OpenSSL's config syntax). */
static X509 *make_cert(const char *cn, const char *org, const char *san)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_get_subject_name(x);
    X509V3_CTX ctx;

    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    if (san) {
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    EVP_PKEY_free(key);
    return x;
}

static void test_certificates(void **state)
{
    char err[256];
    (void)state;

    X509 *x = make_cert("billing", "Acme, Inc",
                        "DNS:billing.acme.internal,IP:10.1.2.3,IP:::1,URI:spiffe://acme/billing,"
                        "email:ops@acme.example");
    gw_peer_cert *c = gw_peer_cert_from_x509(x);
    assert_non_null(c);
    /* RFC 2253: most specific first, the comma escaped. */
    assert_string_equal(c->subject, "CN=billing,O=Acme\\, Inc");
    assert_int_equal(c->n_sans, 5);
    assert_string_equal(c->sans[0], "DNS:billing.acme.internal");
    assert_string_equal(c->sans[1], "IP:10.1.2.3");
    assert_string_equal(c->sans[2], "IP:::1");
    assert_string_equal(c->sans[3], "URI:spiffe://acme/billing");
    assert_string_equal(c->sans[4], "email:ops@acme.example");

    gw_auth *a = parse("principal by-subject\n cert subject CN=billing,O=Acme\\, Inc\n"
                       "principal by-ip\n cert san IP:0:0::1\n"
                       "principal by-uri\n cert san URI:spiffe://acme/billing\n"
                       "principal other\n cert subject CN=other\n cert san DNS:other\n",
                       err, sizeof(err));
    if (a == NULL)
        fail_msg("%s", err);
    /* The first principal in file order that matches. */
    assert_string_equal(gw_auth_by_cert(a, c)->name, "by-subject");
    free(c->subject);
    c->subject = strdup("CN=nobody");
    assert_string_equal(gw_auth_by_cert(a, c)->name, "by-ip"); /* IP:0:0::1 is written as ::1 */
    free(c->sans[2]);
    c->sans[2] = strdup("IP:::2");
    assert_string_equal(gw_auth_by_cert(a, c)->name, "by-uri");
    free(c->sans[3]);
    c->sans[3] = strdup("URI:spiffe://acme/billing/x");
    assert_null(gw_auth_by_cert(a, c));
    assert_null(gw_auth_by_cert(a, NULL));
    gw_peer_cert_free(c);
    gw_auth_release(a);
    X509_free(x);

    /* No SANs at all. */
    x = make_cert("solo", "Acme", NULL);
    c = gw_peer_cert_from_x509(x);
    assert_non_null(c);
    assert_string_equal(c->subject, "CN=solo,O=Acme");
    assert_int_equal(c->n_sans, 0);
    gw_peer_cert_free(c);
    X509_free(x);
}

/* The swap: holders keep the old rules until they let go; counters follow the name. */
static void test_swap_and_counters(void **state)
{
    gateway gw;
    char err[256], h[72], text[256];
    (void)state;

    memset(&gw, 0, sizeof(gw));
    assert_null(gw_auth_acquire(&gw));
    snprintf(text, sizeof(text), "principal svc\n token %s\n", hash_of("one", h));
    gw_auth *first = parse(text, err, sizeof(err));
    assert_int_equal(gw_auth_swap(&gw, first), 0);
    gw_auth *held = gw_auth_acquire(&gw);
    assert_ptr_equal(held, first);
    const gw_principal *old = by_token(held, "one");
    gateway_metrics_principal_events(old->stats, 5);

    snprintf(text, sizeof(text), "principal svc\n token %s\n", hash_of("two", h));
    gw_auth *second = parse(text, err, sizeof(err));
    assert_int_equal(gw_auth_swap(&gw, second), 0);
    /* The holder still sees the old rules (ASan would see a use after free otherwise). */
    assert_ptr_equal(by_token(held, "one"), old);
    gw_auth *now = gw_auth_acquire(&gw);
    assert_ptr_equal(now, second);
    assert_null(by_token(now, "one"));
    const gw_principal *p = by_token(now, "two");
    assert_ptr_equal(p->stats, old->stats);
    assert_int_equal(atomic_load(&p->stats->events), 5);
    gw_auth_release(held);
    gw_auth_release(now);
    gw_auth_clear(&gw);
    assert_null(gw_auth_acquire(&gw));
    gateway_metrics_principals_free(&gw.metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_parse_a_full_file),
        cmocka_unit_test(test_anonymous_defaults_to_no_protocol),
        cmocka_unit_test(test_parse_errors_name_the_line),
        cmocka_unit_test(test_load_reads_a_file_and_names_it),
        cmocka_unit_test(test_token_shorthand_and_open),
        cmocka_unit_test(test_source_prefixes),
        cmocka_unit_test(test_certificates),
        cmocka_unit_test(test_swap_and_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
