#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool.h"

/* The format, as spool.h documents it: tests compute offsets from it. */
#define SEG_HDR 16u
static size_t frame_size(size_t len)
{
    return (32 + len + 7) & ~(size_t)7;
}

/* Each sequence number's payload is a function of it, so any replay can be checked byte for byte. */
static size_t payload(uint64_t seq, uint8_t *buf)
{
    size_t len = (size_t)(seq * 7919 % 301);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seq * 31 + i * 7);
    return len;
}

static void check_payload(const spool_record *r)
{
    uint8_t want[512];
    size_t len = payload(r->seq, want);
    assert_int_equal(r->len, len);
    assert_memory_equal(r->data, want, len);
}

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_spool.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    chmod(tmpdir, 0700);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *path(const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

typedef struct damage {
    int n;
    char segment[8][32];
    uint64_t off[8], len[8];
    char reason[8][32];
    int dropped;
} damage;

static void on_damage(void *ctx, const char *segment, uint64_t off, uint64_t len, const void *bytes,
                      const char *reason)
{
    damage *d = ctx;
    (void)bytes;
    if (d->n < 8) {
        snprintf(d->segment[d->n], 32, "%s", segment);
        d->off[d->n] = off;
        d->len[d->n] = len;
        snprintf(d->reason[d->n], 32, "%s", reason);
    }
    d->n++;
}

static void on_drop(void *ctx, uint64_t seq, size_t len, const char *reason)
{
    damage *d = ctx;
    (void)seq;
    (void)len;
    assert_string_equal(reason, "max-age");
    d->dropped++;
}

static spool *open_spool(spool_config *cfg, damage *d)
{
    spool *sp = NULL;
    char err[256] = "";
    cfg->dir = path("spool");
    if (d) {
        cfg->on_damage = on_damage;
        cfg->on_drop = on_drop;
        cfg->ctx = d;
    }
    int rc = spool_open(cfg, &sp, err, sizeof(err));
    if (rc)
        fail_msg("spool_open: %d %s", rc, err);
    return sp;
}

static uint64_t append_n(spool *sp, int n)
{
    uint8_t buf[512];
    uint64_t seq = 0;
    for (int i = 0; i < n; i++) {
        uint64_t want = seq + 1;
        size_t len = payload(want, buf);
        assert_int_equal(spool_append(sp, buf, len, &seq), 0);
    }
    assert_int_equal(spool_wait_durable(sp, seq, -1), 0);
    return seq;
}

/* Append records whose payload matches their sequence (the first append tells which that is). */
static uint64_t append_matching(spool *sp, int n)
{
    uint8_t buf[512];
    uint64_t seq = 0, next = spool_durable(sp) + 1;
    for (int i = 0; i < n; i++, next++) {
        size_t len = payload(next, buf);
        assert_int_equal(spool_append(sp, buf, len, &seq), 0);
        assert_int_equal(seq, next);
    }
    assert_int_equal(spool_wait_durable(sp, seq, -1), 0);
    return seq;
}

/* Sorted .seg first-sequence numbers in the spool directory. */
static int list_segments(uint64_t *firsts, int max)
{
    DIR *d = opendir(path("spool"));
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".seg") && n < max)
            firsts[n++] = strtoull(e->d_name, NULL, 10);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && firsts[j - 1] > firsts[j]; j--) {
            uint64_t t = firsts[j];
            firsts[j] = firsts[j - 1];
            firsts[j - 1] = t;
        }
    return n;
}

static char *seg_path(uint64_t first)
{
    char name[64];
    snprintf(name, sizeof(name), "spool/%020" PRIu64 ".seg", first);
    return path(name);
}

/* Offset of record `seq` in the segment starting at `first` (records first.. contiguous). */
static uint64_t offset_of(uint64_t first, uint64_t seq)
{
    uint8_t buf[512];
    uint64_t off = SEG_HDR;
    for (uint64_t s = first; s < seq; s++)
        off += frame_size(payload(s, buf));
    return off;
}

/* Replay all there is now; returns the count, checks order and payloads, seqs into out when given. */
static int replay_all(spool *sp, uint64_t *out, int max, int ack)
{
    spool_record r;
    uint64_t last = 0;
    int n = 0;
    while (spool_next(sp, &r, 0) == 1) {
        assert_true(r.seq > last);
        last = r.seq;
        check_payload(&r);
        if (out && n < max)
            out[n] = r.seq;
        n++;
        if (ack)
            spool_ack(sp, r.seq);
    }
    return n;
}

/* Count what replays, payloads unchecked. */
static int replay_all_any(spool *sp)
{
    spool_record r;
    int n = 0;
    while (spool_next(sp, &r, 0) == 1)
        n++;
    return n;
}

static void test_append_and_replay_across_rotation(void **state)
{
    spool_config cfg = {.segment_bytes = 4096, .group_window_us = 100};
    spool_stats st;
    uint64_t seqs[1000];
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    assert_int_equal(append_n(sp, 1000), 1000);
    spool_get_stats(sp, &st);
    assert_true(st.segments > 20);
    assert_int_equal(st.records, 1000);
    assert_int_equal(st.durable_seq, 1000);
    assert_true(st.fsyncs > 0);
    assert_int_equal(replay_all(sp, seqs, 1000, 0), 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seqs[i], i + 1);
    /* The reader waits at the tail, and sees what comes next. */
    append_matching(sp, 5);
    assert_int_equal(replay_all(sp, NULL, 0, 0), 5);
    spool_close(sp);
}

typedef struct producer {
    spool *sp;
    uint64_t seqs[2000];
    int n;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    uint8_t buf[64];
    memset(buf, 'x', sizeof(buf));
    for (p->n = 0; p->n < 2000; p->n++)
        if (spool_append(p->sp, buf, (size_t)p->n % 64, &p->seqs[p->n]) != 0)
            break;
    return NULL;
}

static atomic_uint_fast64_t durable_seen;
static atomic_int durable_backwards;

static void on_durable(void *ctx, uint64_t seq)
{
    (void)ctx;
    if (seq < atomic_load(&durable_seen))
        atomic_store(&durable_backwards, 1);
    atomic_store(&durable_seen, seq);
}

static void test_concurrent_appends(void **state)
{
    enum { T = 4, N = 2000 };
    spool_config cfg = {.segment_bytes = 64 << 10, .group_window_us = 200, .on_durable = on_durable};
    static producer p[T];
    pthread_t th[T];
    static uint8_t seen[T * N + 1];
    spool_record r;
    (void)state;
    atomic_store(&durable_seen, 0);
    atomic_store(&durable_backwards, 0);
    spool *sp = open_spool(&cfg, NULL);
    for (int i = 0; i < T; i++) {
        p[i].sp = sp;
        assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    uint64_t max = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].n, N);
        for (int k = 0; k < N; k++) {
            uint64_t s = p[i].seqs[k];
            assert_true(s >= 1 && s <= T * N);
            assert_false(seen[s]);
            seen[s] = 1;
            if (k)
                assert_true(s > p[i].seqs[k - 1]); /* one thread's appends keep their order */
            max = s > max ? s : max;
        }
    }
    assert_int_equal(max, T * N);
    assert_int_equal(spool_wait_durable(sp, max, -1), 0);
    spool_close(sp); /* joins the writer: every callback has run */
    assert_int_equal(atomic_load(&durable_seen), T * N);
    assert_false(atomic_load(&durable_backwards));

    /* Replayed in sequence order, each with the length its producer gave it. */
    static size_t want_len[T * N + 1];
    for (int i = 0; i < T; i++)
        for (int k = 0; k < N; k++)
            want_len[p[i].seqs[k]] = (size_t)k % 64;
    cfg.on_durable = NULL;
    sp = open_spool(&cfg, NULL);
    for (uint64_t s = 1; s <= T * N; s++) {
        assert_int_equal(spool_next(sp, &r, 0), 1);
        assert_int_equal(r.seq, s);
        assert_int_equal(r.len, want_len[s]);
    }
    assert_int_equal(spool_next(sp, &r, 0), 0);
    spool_close(sp);
}

static void test_out_of_order_acks_delete_only_full_segments(void **state)
{
    spool_config cfg = {.segment_bytes = 2048};
    uint64_t firsts[64], after[64];
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    append_n(sp, 100);
    int nseg = list_segments(firsts, 64);
    assert_true(nseg >= 4);
    assert_int_equal(replay_all(sp, NULL, 0, 0), 100);
    /* The second segment's records, last first, all but its first one. */
    uint64_t a = firsts[1], b = firsts[2] - 1;
    for (uint64_t s = b; s > a; s--)
        spool_ack(sp, s);
    spool_ack(sp, b); /* twice: no effect */
    assert_int_equal(list_segments(after, 64), nseg);
    spool_ack(sp, a);
    assert_int_equal(list_segments(after, 64), nseg - 1);
    assert_int_equal(access(seg_path(firsts[1]), F_OK), -1);
    /* The writer's segment stays while being written, even fully acked. */
    for (uint64_t s = firsts[nseg - 1]; s <= 100; s++)
        spool_ack(sp, s);
    assert_int_equal(access(seg_path(firsts[nseg - 1]), F_OK), 0);
    /* The first segment, odd then even. */
    for (uint64_t s = firsts[0]; s < firsts[1]; s += 2)
        spool_ack(sp, s);
    assert_int_equal(access(seg_path(firsts[0]), F_OK), 0);
    for (uint64_t s = firsts[0] + 1; s < firsts[1]; s += 2)
        spool_ack(sp, s);
    assert_int_equal(access(seg_path(firsts[0]), F_OK), -1);
    spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.segments, (uint64_t)nseg - 2);
    spool_close(sp);
}

static void test_reopen_replays_exactly_the_unacked(void **state)
{
    spool_config cfg = {.segment_bytes = 4096};
    uint64_t seqs[300];
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    append_n(sp, 300);
    assert_int_equal(replay_all(sp, seqs, 300, 0), 300);
    for (uint64_t s = 1; s <= 300; s++)
        if (s % 2 || s < 101)
            spool_ack(sp, s);
    spool_close(sp);

    sp = open_spool(&cfg, NULL);
    spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.records, 100);
    assert_int_equal(replay_all(sp, seqs, 300, 0), 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(seqs[i], 102 + 2 * i);
    /* New appends continue the numbering after a restart. */
    uint8_t buf[512];
    uint64_t seq;
    assert_int_equal(spool_append(sp, buf, payload(301, buf), &seq), 0);
    assert_int_equal(seq, 301);
    assert_int_equal(spool_wait_durable(sp, 301, -1), 0);
    assert_int_equal(replay_all(sp, seqs, 300, 0), 1);
    assert_int_equal(seqs[0], 301);
    spool_close(sp);
}

static uint8_t *read_file(const char *p, size_t *len)
{
    struct stat stb;
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &stb), 0);
    uint8_t *b = malloc((size_t)stb.st_size + 1);
    assert_int_equal(read(fd, b, (size_t)stb.st_size), stb.st_size);
    close(fd);
    *len = (size_t)stb.st_size;
    return b;
}

static void write_file(const char *p, const uint8_t *b, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
}

static void clear_spool(void)
{
    uint64_t firsts[64];
    int n = list_segments(firsts, 64);
    for (int i = 0; i < n; i++)
        unlink(seg_path(firsts[i]));
}

static void test_torn_tail_at_many_points(void **state)
{
    spool_config cfg = {0};
    damage d = {0};
    uint64_t ends[41];
    uint8_t buf[512];
    size_t len;
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    append_n(sp, 40);
    spool_close(sp);
    uint8_t *orig = read_file(seg_path(1), &len);
    ends[0] = SEG_HDR;
    for (uint64_t s = 1; s <= 40; s++)
        ends[s] = ends[s - 1] + frame_size(payload(s, buf));
    assert_int_equal(ends[40], len);

    /* Every 8-byte boundary from the header on, and some odd ones, and a zero-filled extension. */
    for (size_t cut = 0; cut <= len + 64; cut += cut < 40 ? 3 : 37) {
        int want = 0;
        while (want < 40 && ends[want + 1] <= cut)
            want++;
        clear_spool();
        if (cut <= len) {
            write_file(seg_path(1), orig, cut);
        } else {
            uint8_t *z = calloc(1, cut);
            memcpy(z, orig, len);
            write_file(seg_path(1), z, cut);
            free(z);
        }
        memset(&d, 0, sizeof(d));
        sp = open_spool(&cfg, &d);
        spool_stats st;
        spool_get_stats(sp, &st);
        assert_int_equal(st.truncated_bytes, cut - (want ? ends[want] : (cut < SEG_HDR ? 0 : SEG_HDR)));
        assert_int_equal(replay_all(sp, NULL, 0, 0), want);
        assert_int_equal(d.n, 0);
        /* The next append follows the last whole record (or the segment's name, when none is left). */
        uint64_t seq;
        assert_int_equal(spool_append(sp, buf, payload(want + 1, buf), &seq), 0);
        assert_int_equal(seq, want ? (uint64_t)want + 1 : 2);
        spool_close(sp);
    }
    free(orig);
}

/* Three segments of known records; returns them in firsts. */
static int three_segments(uint64_t *firsts, uint64_t *total)
{
    spool_config cfg = {.segment_bytes = 3000};
    spool *sp = open_spool(&cfg, NULL);
    *total = append_n(sp, 60);
    spool_close(sp);
    int n = list_segments(firsts, 64);
    assert_true(n >= 3);
    return n;
}

static void expect_all_but(spool *sp, uint64_t total, uint64_t lo, uint64_t hi)
{
    uint64_t seqs[128];
    int n = replay_all(sp, seqs, 128, 0), k = 0;
    for (uint64_t s = 1; s <= total; s++)
        if (s < lo || s > hi) {
            assert_true(k < n);
            assert_int_equal(seqs[k++], s);
        }
    assert_int_equal(k, n);
}

static void test_flipped_bytes_mid_segment(void **state)
{
    uint64_t firsts[64], total;
    uint8_t buf[512];
    size_t len;
    damage d = {0};
    spool_config cfg = {0};
    (void)state;
    three_segments(firsts, &total);
    /* A record in the middle of the first segment: its payload, then another's length field. */
    uint64_t victim = firsts[0] + 3, off = offset_of(firsts[0], victim);
    uint8_t *b = read_file(seg_path(firsts[0]), &len);
    b[off + 40] ^= 0x5a;
    uint64_t victim2 = firsts[0] + 6, off2 = offset_of(firsts[0], victim2);
    b[off2 + 10] ^= 0x01;
    write_file(seg_path(firsts[0]), b, len);
    free(b);

    spool *sp = open_spool(&cfg, &d);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.reason[0], "bad-checksum");
    assert_int_equal(d.off[0], off);
    assert_int_equal(d.len[0], frame_size(payload(victim, buf)));
    assert_int_equal(d.off[1], off2);
    assert_int_equal(d.len[1], frame_size(payload(victim2, buf)));
    char name[32];
    snprintf(name, sizeof(name), "%020" PRIu64 ".seg", firsts[0]);
    assert_string_equal(d.segment[0], name);
    uint64_t seqs[128];
    int n = replay_all(sp, seqs, 128, 0);
    assert_int_equal(n, (int)total - 2);
    for (int i = 0, k = 0; i < n; i++, k++) {
        while ((uint64_t)k + 1 == victim || (uint64_t)k + 1 == victim2)
            k++;
        assert_int_equal(seqs[i], (uint64_t)k + 1);
    }
    assert_int_equal(d.n, 2); /* the reader steps over what was reported, silently */
    spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.corrupt_ranges, 2);
    assert_int_equal(st.corrupt_bytes, d.len[0] + d.len[1]);
    /* Acking every good record deletes the damaged segment too. */
    for (int i = 0; i < n; i++)
        spool_ack(sp, seqs[i]);
    assert_int_equal(access(seg_path(firsts[0]), F_OK), -1);
    spool_close(sp);
}

static void test_zero_filled_tail_of_a_middle_segment(void **state)
{
    uint64_t firsts[64], total;
    size_t len;
    damage d = {0};
    spool_config cfg = {0};
    (void)state;
    three_segments(firsts, &total);
    uint64_t from = firsts[2] - 2, off = offset_of(firsts[1], from);
    uint8_t *b = read_file(seg_path(firsts[1]), &len);
    memset(b + off, 0, len - off);
    write_file(seg_path(firsts[1]), b, len);
    free(b);

    spool *sp = open_spool(&cfg, &d);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.reason[0], "zero-filled");
    assert_int_equal(d.off[0], off);
    assert_int_equal(d.len[0], len - off);
    expect_all_but(sp, total, from, from + 1);
    assert_int_equal(d.n, 1);
    spool_close(sp);
}

static void test_truncated_middle_segment(void **state)
{
    uint64_t firsts[64], total;
    size_t len;
    damage d = {0};
    spool_config cfg = {0};
    (void)state;
    three_segments(firsts, &total);
    uint64_t off = offset_of(firsts[1], firsts[1] + 4);
    uint8_t *b = read_file(seg_path(firsts[1]), &len);
    write_file(seg_path(firsts[1]), b, off + 20); /* cut inside the fifth record's header */
    free(b);

    spool *sp = open_spool(&cfg, &d);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.reason[0], "truncated");
    assert_int_equal(d.off[0], off);
    assert_int_equal(d.len[0], 20);
    expect_all_but(sp, total, firsts[1] + 4, firsts[2] - 1);
    spool_close(sp);
}

static void test_full_then_acks_free_space(void **state)
{
    spool_config cfg = {.segment_bytes = 4096, .max_bytes = 32 << 10};
    uint8_t buf[200] = {0};
    uint64_t seq;
    spool_stats st;
    int rc, n = 0;
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    while ((rc = spool_append(sp, buf, sizeof(buf), &seq)) == 0)
        n++;
    assert_int_equal(rc, -ENOSPC);
    assert_true(n > 100);
    assert_int_equal(spool_wait_durable(sp, seq, -1), 0);
    spool_get_stats(sp, &st);
    assert_true(st.bytes <= cfg.max_bytes);
    spool_record r;
    while (spool_next(sp, &r, 0) == 1)
        spool_ack(sp, r.seq);
    assert_int_equal(spool_append(sp, buf, sizeof(buf), &seq), 0);
    assert_int_equal(seq, (uint64_t)n + 1);
    assert_int_equal(spool_wait_durable(sp, seq, -1), 0);
    spool_get_stats(sp, &st);
    assert_true(st.bytes < 2 * 4096);
    assert_int_equal(st.records, 1);
    assert_int_equal(spool_append(sp, buf, SPOOL_MAX_RECORD + 1, &seq), -EMSGSIZE);
    spool_close(sp);
}

static void test_second_opener_is_refused(void **state)
{
    spool_config cfg = {0};
    spool *sp = open_spool(&cfg, NULL), *sp2 = NULL;
    char err[256], want[64];
    (void)state;
    assert_int_equal(spool_open(&cfg, &sp2, err, sizeof(err)), -EWOULDBLOCK);
    assert_null(sp2);
    snprintf(want, sizeof(want), "pid %ld", (long)getpid());
    assert_non_null(strstr(err, want));
    spool_close(sp);
    assert_int_equal(spool_open(&cfg, &sp2, err, sizeof(err)), 0);
    spool_close(sp2);
}

static void test_unusable_directories(void **state)
{
    spool_config cfg = {0};
    spool *sp = NULL;
    char err[256] = "";
    (void)state;
    cfg.dir = path("missing/spool");
    assert_int_equal(spool_open(&cfg, &sp, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "missing/spool"));
    write_file(path("file"), (const uint8_t *)"x", 1);
    cfg.dir = path("file/spool");
    assert_int_equal(spool_open(&cfg, &sp, err, sizeof(err)), -ENOTDIR);
    assert_null(sp);

    /* Read-only: in a child without root's override (the tests may run as root). */
    assert_int_equal(mkdir(path("ro"), 0500), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof(data));
        if (syscall(SYS_capset, &h, data) != 0)
            _exit(2);
        cfg.dir = path("ro");
        int rc = spool_open(&cfg, &sp, err, sizeof(err));
        _exit(rc == -EACCES && sp == NULL && strstr(err, "ro") ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_max_age_drops_unreplayed(void **state)
{
    spool_config cfg = {0};
    damage d = {0};
    spool_stats st;
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    append_n(sp, 10);
    spool_close(sp);
    struct timespec ts = {0, 150 * 1000000};
    nanosleep(&ts, NULL);
    cfg.max_age_ms = 100;
    sp = open_spool(&cfg, &d);
    spool_get_stats(sp, &st);
    assert_true(st.oldest_age_ms >= 100);
    append_matching(sp, 3); /* fresh ones are replayed */
    assert_int_equal(replay_all(sp, NULL, 0, 0), 3);
    assert_int_equal(d.dropped, 10);
    spool_get_stats(sp, &st);
    assert_int_equal(st.expired_records, 10);
    assert_int_equal(st.records, 3);
    spool_close(sp);
}

/* A write error (here EFBIG past RLIMIT_FSIZE) stays: no more appends, waiters told, no crash. */
static void test_write_error_is_sticky(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {64 << 10, 64 << 10};
        spool_config cfg = {.segment_bytes = 1 << 20};
        spool *sp = NULL;
        uint8_t buf[1000] = {0};
        uint64_t seq = 0;
        int rc = 0, n = 0;
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(2);
        cfg.dir = path("spool");
        if (spool_open(&cfg, &sp, NULL, 0) != 0)
            _exit(3);
        while (n < 1000 && (rc = spool_append(sp, buf, sizeof(buf), &seq)) == 0)
            if (spool_wait_durable(sp, seq, -1) == 0)
                n++;
        spool_stats st;
        spool_get_stats(sp, &st);
        int ok = rc == -EFBIG && spool_wait_durable(sp, seq, -1) == -EFBIG && st.error == EFBIG && n > 10 &&
                 n < 70 && spool_durable(sp) == (uint64_t)n;
        spool_close(sp);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* What was durable before is all there. */
    spool_config cfg = {0};
    damage d = {0};
    spool *sp = open_spool(&cfg, &d);
    int n = replay_all_any(sp);
    assert_true(n > 10 && n < 70);
    assert_int_equal(d.n, 0);
    spool_close(sp);
}

/* A reader waiting at the tail is woken by spool_stop. */
static void *wait_at_tail(void *arg)
{
    spool_record r;
    return (void *)(intptr_t)spool_next(arg, &r, -1);
}

static void test_stop_wakes_the_reader(void **state)
{
    spool_config cfg = {0};
    pthread_t th;
    void *ret;
    (void)state;
    spool *sp = open_spool(&cfg, NULL);
    assert_int_equal(pthread_create(&th, NULL, wait_at_tail, sp), 0);
    spool_stop(sp);
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_int_equal((intptr_t)ret, -EPIPE);
    uint64_t seq;
    assert_int_equal(spool_append(sp, "x", 1, &seq), -EPIPE);
    spool_close(sp);
}

/* --- kill -9 ------------------------------------------------------------------- */

static int durable_pipe;

static void report_durable(void *ctx, uint64_t seq)
{
    (void)ctx;
    if (write(durable_pipe, &seq, sizeof(seq)) != sizeof(seq))
        _exit(3);
}

static void crash_child(void)
{
    spool_config cfg = {.segment_bytes = 256 << 10,
                        .max_bytes = 64 << 20,
                        .group_window_us = 300,
                        .on_durable = report_durable};
    spool *sp = NULL;
    uint8_t buf[512];
    cfg.dir = path("spool");
    if (spool_open(&cfg, &sp, NULL, 0) != 0)
        _exit(4);
    /* One producer: each sequence it gets is the one after the last, from where recovery left off. */
    uint64_t mine = spool_durable(sp);
    /* First on the pipe: where this run starts (a crash may skip a sequence number, spool.h). */
    report_durable(NULL, mine);
    for (;;) {
        uint64_t seq;
        size_t len = payload(mine + 1, buf);
        int rc = spool_append(sp, buf, len, &seq);
        if (rc == -ENOSPC) {
            usleep(1000);
            continue;
        }
        if (rc != 0 || seq != mine + 1)
            _exit(5);
        mine = seq;
    }
}

static void test_kill_9_loses_nothing_durable(void **state)
{
    spool_config cfg = {.segment_bytes = 256 << 10};
    unsigned seed = (unsigned)time(NULL);
    uint64_t acked_upto = 0;
    (void)state;
    print_message("seed %u\n", seed);
    srand(seed);
    for (int round = 0; round < 6; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            durable_pipe = fds[1];
            crash_child();
        }
        close(fds[1]);
        /* Let it run a random while, then kill it mid-whatever. */
        struct pollfd pfd = {fds[0], POLLIN, 0};
        uint64_t s, reported = 0, start = UINT64_MAX;
        long long until = prom_now_ns() / 1000000 + 20 + rand() % 300, left;
        while ((left = until - (long long)(prom_now_ns() / 1000000)) > 0)
            if (poll(&pfd, 1, (int)left) == 1 && read(fds[0], &s, sizeof(s)) == sizeof(s)) {
                if (start == UINT64_MAX)
                    start = s;
                assert_true(s >= reported);
                reported = s;
            }
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        while (read(fds[0], &s, sizeof(s)) == sizeof(s)) {
            if (start == UINT64_MAX)
                start = s;
            assert_true(s >= reported);
            reported = s;
        }
        close(fds[0]);
        assert_true(start >= acked_upto);
        assert_true(reported > start); /* the child got something done */

        damage d = {0};
        spool *sp = open_spool(&cfg, &d);
        assert_int_equal(d.n, 0);
        spool_record r;
        uint64_t want = start + 1;
        while (spool_next(sp, &r, 0) == 1) {
            assert_int_equal(r.seq, want);
            check_payload(&r);
            spool_ack(sp, r.seq);
            want++;
        }
        /* Every record reported durable came back (and perhaps some that were written but not yet reported).
         */
        assert_true(want - 1 >= reported);
        print_message("round %d: %" PRIu64 " durable reported, %" PRIu64 " replayed\n", round,
                      reported - start, want - 1 - start);
        acked_upto = want - 1;
        spool_close(sp);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_and_replay_across_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_acks_delete_only_full_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_replays_exactly_the_unacked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_at_many_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bytes_mid_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_filled_tail_of_a_middle_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_middle_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_then_acks_free_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_opener_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_age_drops_unreplayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_is_sticky, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_wakes_the_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_9_loses_nothing_durable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
