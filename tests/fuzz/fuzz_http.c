/*
 * gateway/http_server and gateway/http's handler, driven by raw bytes: each
 * input is what one client sends on one connection (pipelined requests,
 * chunked bodies, gzip, every content mode), then it closes its side. No
 * network: the front listens on an abstract AF_UNIX socket, and the loop
 * runs on this thread. No Kafka: this harness plays the producer, taking
 * every queued record off the queue and reporting its delivery (or its
 * failure), so that ack=committed answers come too.
 *
 * The first byte chooses the front (without or with a bearer token) and
 * whether deliveries succeed; the rest are the connection's bytes. Checked:
 * every answer is HTTP/1.1, none is a 500, and the connection ends.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "fuzz.h"
#include "gateway.h"
#include "http.h"
#include "log.h"
#include "producer.h"
#include "queue.h"

typedef struct front {
    gateway_config cfg;
    gateway gw;
    gw_http_loop *loop;
    struct sockaddr_un addr;
    socklen_t addr_len;
} front;

static struct event_base *base;
static front fronts[2];

/* A front as tests/unit/test_http.c sets one up (as main.c does), small limits to reach them. */
static void front_start(front *f, const char *token)
{
    char err[256];

    f->cfg = (gateway_config){
        .kafka_bootstrap = (char *)"127.0.0.1:1",
        .kafka_topic = (char *)"events",
        .gateway_id = (char *)"gw-fuzz",
        .http_threads = 1,
        .producer_threads = 1,
        .queue_capacity = 64,
        .queue_high_water = 32,
        .max_event_bytes = 4096,
        .max_request_bytes = 64 * 1024,
        .max_batch_events = 8,
        .ack_timeout_ms = 5000,
        .default_ack = (char *)"committed",
        .auth_token = (char *)token,
        .http_idle_timeout_ms = 5000,
        .retry_after_s = 7,
        .shutdown_timeout_ms = 1000,
        .log_level = (char *)"error",
        .log_format = (char *)"logfmt",
    };
    f->gw.cfg = &f->cfg;
    ing_event_limits_default(&f->gw.lim);
    f->gw.lim.max_event_bytes = (size_t)f->cfg.max_event_bytes;
    f->gw.lim.max_request_bytes = (size_t)f->cfg.max_request_bytes;
    f->gw.lim.max_batch_events = (size_t)f->cfg.max_batch_events;
    atomic_init(&f->gw.stopping, 0);
    atomic_init(&f->gw.kafka_reachable, 1);
    FUZZ_CHECK(gw_budget_init(&f->gw.budget, (size_t)256 << 20, (size_t)f->cfg.max_request_bytes, err,
                              sizeof(err)) == 0,
               "budget: %s", err);
    FUZZ_CHECK((f->gw.q = queue_new((size_t)f->cfg.queue_capacity, (size_t)f->cfg.queue_high_water)) != NULL,
               "no queue");

    /* An abstract AF_UNIX name the kernel picks (autobind): nothing on disk, no port. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    f->addr.sun_family = AF_UNIX;
    FUZZ_CHECK(bind(fd, (struct sockaddr *)&f->addr, sizeof(sa_family_t)) == 0, "bind: %s", strerror(errno));
    f->addr_len = sizeof(f->addr);
    FUZZ_CHECK(getsockname(fd, (struct sockaddr *)&f->addr, &f->addr_len) == 0, "getsockname");
    FUZZ_CHECK(listen(fd, 16) == 0, "listen: %s", strerror(errno));
    FUZZ_CHECK((f->loop = gw_http_loop_new(base, fd, &f->gw)) != NULL, "no HTTP loop");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    FUZZ_CHECK((base = event_base_new()) != NULL, "no event base");
    front_start(&fronts[0], "");
    front_start(&fronts[1], "s3cret");
    return 0;
}

/* The producer's part: every queued record delivered, or failed, at once. */
static void play_producer(front *f, int fail)
{
    void *items[64];
    size_t n;

    while ((n = queue_pop_n(f->gw.q, items, 64, 0)) > 0)
        for (size_t i = 0; i < n; i++) {
            produce_msg *m = items[i];
            FUZZ_CHECK(m->value_len > 0 && m->ce_id_len > 0, "a record without its Envelope or id");
            if (m->wait)
                ack_wait_report(m->wait,
                                fail ? RD_KAFKA_RESP_ERR__MSG_TIMED_OUT : RD_KAFKA_RESP_ERR_NO_ERROR);
            produce_msg_free(m);
        }
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The answers, one after the other: each HTTP/1.1 with its whole body, and none a 500. */
static void check_answers(const char *a, size_t len)
{
    size_t p = 0;

    while (p < len) {
        const char *head_end = memmem(a + p, len - p, "\r\n\r\n", 4);
        FUZZ_CHECK(head_end != NULL, "an answer's head is cut short: %.60s", a + p);
        FUZZ_CHECK(len - p > 13 && strncmp(a + p, "HTTP/1.1 ", 9) == 0 && a[p + 12] == ' ',
                   "not an HTTP/1.1 answer: %.60s", a + p);
        int status = atoi(a + p + 9);
        FUZZ_CHECK(status >= 100 && status != 500, "status %d: %.300s", status, a + p);
        size_t body = (size_t)(head_end - a) + 4, blen = 0;
        if (status >= 200) {
            const char *cl = memmem(a + p, (size_t)(head_end - (a + p)), "\r\nContent-Length: ", 18);
            FUZZ_CHECK(cl != NULL, "an answer without Content-Length: %.60s", a + p);
            blen = strtoul(cl + 18, NULL, 10);
        }
        /* A HEAD's answer has the head of the GET's, without its body (our bodies are JSON: '{'). */
        if (blen > 0 && (body == len || (len - body >= 9 && strncmp(a + body, "HTTP/1.1 ", 9) == 0)))
            blen = 0;
        FUZZ_CHECK(len - body >= blen, "an answer's body is cut short");
        p = body + blen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char answer[1 << 20];
    size_t sent = 0, got = 0;
    int shut = 0;

    if (size < 1)
        return 0;
    front *f = &fronts[data[0] & 1];
    int fail = (data[0] & 2) != 0;
    data++, size--;

    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(c >= 0, "socket: %s", strerror(errno));
    FUZZ_CHECK(connect(c, (struct sockaddr *)&f->addr, f->addr_len) == 0, "connect: %s", strerror(errno));
    /*
     * Send; run the loop; play the producer; read the answers. The client
     * closes its side only once the gateway is quiet (nothing waits for
     * Kafka, nothing new came for a few rounds): an EOF is a client gone,
     * and the answers to ack=committed requests would never be written.
     */
    double deadline = now_s() + 10;
    int quiet = 0;
    for (;;) {
        if (sent < size) {
            ssize_t w = send(c, data + sent, size - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (errno != EAGAIN)
                sent = size; /* the server closed: the rest is not for it */
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        play_producer(f, fail);
        ssize_t r = recv(c, answer + got, sizeof(answer) - 1 - got, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            break;
        if (r > 0)
            got += (size_t)r;
        quiet = r > 0 || sent < size || gw_http_loop_pending(f->loop) > 0 ? 0 : quiet + 1;
        if (quiet >= 3 && !shut) {
            shutdown(c, SHUT_WR);
            shut = 1;
        }
        FUZZ_CHECK(got < sizeof(answer) - 1, "more than 1 MiB of answers");
        FUZZ_CHECK(now_s() < deadline, "the connection did not end in 10 s (sent %zu of %zu bytes)", sent,
                   size);
    }
    close(c);
    /* Let the server see the close and free the connection. */
    for (int i = 0; i < 4; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        play_producer(f, fail);
    }

    answer[got] = '\0';
    /* To see what the gateway answered an input: INGEST_FUZZ_VERBOSE=1 fuzz_http FILE. */
    if (getenv("INGEST_FUZZ_VERBOSE"))
        fprintf(stderr, "--- %zu bytes sent, %zu answered:\n%s\n", sent, got, answer);
    check_answers(answer, got);
    return 0;
}
