#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "mono.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the spool's frames are little-endian, written as the host lays them out"
#endif

#define SEG_MAGIC   0x47505349u /* "ISPG" */
#define SEG_VERSION 1u
#define SEG_HDR     16u
#define REC_MAGIC   0x4C505352u /* "RSPL" */
#define REC_HDR     32u
#define REC_NEWSEG  1u  /* flags: the first frame of its segment */
#define ACK_BATCH   512 /* acks buffered per segment before one write() */

typedef struct skip {
    uint64_t off, len;
} skip;

typedef struct segment {
    uint64_t first;   /* its name */
    uint64_t last;    /* highest sequence in it, 0 when none */
    uint64_t size;    /* bytes assigned to it (file size once written) */
    uint64_t durable; /* bytes synced */
    uint64_t unacked; /* records present and not acknowledged */
    uint64_t *bits;   /* bit (seq - first): present and unacknowledged */
    size_t nwords;
    int64_t first_ts; /* time_ms of its first record, 0 when none */
    bool sealed;      /* no more writes: deletable once unacked is 0 */
    int fd;           /* the writer's, -1 when closed */
    int ack_fd;       /* -1 until the first ack write */
    uint64_t ackbuf[ACK_BATCH];
    int nack;
    skip *skips; /* damaged ranges found at open, reported already */
    size_t nskips;
} segment;

struct spool {
    spool_config cfg;
    char *dir;
    int dirfd, lockfd;

    pthread_mutex_t mu;
    pthread_cond_t wake_writer; /* a group to write, or closing */
    pthread_cond_t durable_cv;  /* durable_seq moved, or error/closing */
    pthread_t writer;
    bool writer_started;

    /* Under mu. */
    segment **segs; /* by first sequence */
    size_t nsegs, capsegs;
    uint8_t *group; /* frames appended, not yet taken by the writer */
    size_t group_len, group_cap;
    uint64_t group_start_ns; /* prom_now_ns() at the group's first record */
    uint64_t next_seq, durable_seq;
    uint64_t bytes;
    uint64_t tail_size; /* the writer's segment once the group is written; 0: the next record opens one */
    int error;
    bool closing;
    spool_stats st;

    /* The reader's. */
    uint64_t rd_seg; /* first sequence of the segment it reads, 0 before the first */
    uint64_t rd_off;
    uint64_t rd_last; /* last sequence returned or skipped */
    const uint8_t *rd_map;
    size_t rd_maplen;

    prom_histogram fsync_hist;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t frame_size(size_t len)
{
    return (REC_HDR + len + 7) & ~(size_t)7;
}

static void seg_name(char *buf, size_t n, uint64_t first, const char *ext)
{
    snprintf(buf, n, "%020" PRIu64 ".%s", first, ext);
}

/*
 * The payload is summed first and the header's 24 bytes after it, so that
 * an appender sums its payload before it takes the lock, where the sequence
 * number is given.
 */
static uint32_t header_crc(uLong payload_crc, const uint8_t *frame)
{
    return (uint32_t)crc32(payload_crc, frame + 8, REC_HDR - 8);
}

static uint32_t frame_crc(const uint8_t *p, uint32_t len)
{
    return header_crc(crc32(crc32(0L, Z_NULL, 0), p + REC_HDR, len), p);
}

/*
 * Check the frame at p (avail bytes up to the end of what is written).
 * NULL when whole and sound, else the reason.
 */
static const char *frame_check(const uint8_t *p, uint64_t avail, uint64_t prev_seq, uint32_t *len_out)
{
    uint32_t magic, crc, len;
    uint64_t seq;
    if (avail < REC_HDR)
        return "truncated";
    memcpy(&magic, p, 4);
    memcpy(&crc, p + 4, 4);
    memcpy(&len, p + 8, 4);
    memcpy(&seq, p + 16, 8);
    if (magic != REC_MAGIC) {
        for (unsigned i = 0; i < REC_HDR; i++)
            if (p[i])
                return "bad-magic";
        return "zero-filled";
    }
    if (len > SPOOL_MAX_RECORD)
        return "bad-length";
    if (frame_size(len) > avail)
        return "truncated";
    if (frame_crc(p, len) != crc)
        return "bad-checksum";
    if (seq <= prev_seq)
        return "bad-sequence";
    *len_out = len;
    return NULL;
}

/* The next 8-aligned offset after off where a sound frame starts, or end. */
static uint64_t resync(const uint8_t *base, uint64_t off, uint64_t end, uint64_t prev_seq)
{
    uint32_t len;
    for (off += 8; off + REC_HDR <= end; off += 8) {
        uint32_t magic;
        memcpy(&magic, base + off, 4);
        if (magic == REC_MAGIC && !frame_check(base + off, end - off, prev_seq, &len))
            return off;
    }
    return end;
}

/* --- segment table (under mu) --------------------------------------------- */

static segment *seg_new(uint64_t first)
{
    segment *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->first = first;
    s->fd = -1;
    s->ack_fd = -1;
    return s;
}

static int seg_insert(spool *sp, segment *s)
{
    if (sp->nsegs == sp->capsegs) {
        size_t cap = sp->capsegs ? sp->capsegs * 2 : 16;
        segment **n = realloc(sp->segs, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        sp->segs = n;
        sp->capsegs = cap;
    }
    size_t i = sp->nsegs;
    while (i > 0 && sp->segs[i - 1]->first > s->first) {
        sp->segs[i] = sp->segs[i - 1];
        i--;
    }
    sp->segs[i] = s;
    sp->nsegs++;
    return 0;
}

/* The segment holding seq (the last with first <= seq), or NULL. */
static size_t seg_find(spool *sp, uint64_t seq)
{
    size_t lo = 0, hi = sp->nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sp->segs[mid]->first <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo; /* index + 1 of the segment, 0 when none */
}

static int seg_mark(segment *s, uint64_t seq)
{
    uint64_t bit = seq - s->first;
    if (bit / 64 >= s->nwords) {
        size_t n = s->nwords ? s->nwords : 64;
        while (n <= bit / 64)
            n *= 2;
        uint64_t *b = realloc(s->bits, n * sizeof(*b));
        if (!b)
            return -ENOMEM;
        memset(b + s->nwords, 0, (n - s->nwords) * sizeof(*b));
        s->bits = b;
        s->nwords = n;
    }
    s->bits[bit / 64] |= 1ull << (bit % 64);
    s->unacked++;
    s->last = seq;
    return 0;
}

static bool seg_pending(const segment *s, uint64_t seq)
{
    uint64_t bit = seq - s->first;
    return seq >= s->first && bit / 64 < s->nwords && (s->bits[bit / 64] >> (bit % 64) & 1);
}

static void seg_free(segment *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->ack_fd >= 0)
        close(s->ack_fd);
    free(s->bits);
    free(s->skips);
    free(s);
}

static void ack_flush(spool *sp, segment *s)
{
    if (!s->nack)
        return;
    if (s->ack_fd < 0) {
        char name[32];
        seg_name(name, sizeof(name), s->first, "ack");
        s->ack_fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
    /* A lost ack only means a record replayed twice: no error to raise. */
    if (s->ack_fd >= 0 && write(s->ack_fd, s->ackbuf, s->nack * sizeof(uint64_t)) < 0)
        (void)0;
    s->nack = 0;
}

/* Delete segment i if it is sealed and fully acknowledged. */
static void seg_maybe_delete(spool *sp, size_t i)
{
    segment *s = sp->segs[i];
    char name[32];
    /* The last one stays: its name keeps the sequence numbers growing across restarts. */
    if (!s->sealed || s->unacked || s->durable != s->size || i == sp->nsegs - 1)
        return;
    seg_name(name, sizeof(name), s->first, "seg");
    unlinkat(sp->dirfd, name, 0);
    seg_name(name, sizeof(name), s->first, "ack");
    unlinkat(sp->dirfd, name, 0);
    sp->bytes -= s->size;
    memmove(sp->segs + i, sp->segs + i + 1, (sp->nsegs - i - 1) * sizeof(*sp->segs));
    sp->nsegs--;
    seg_free(s);
}

/* --- recovery ---------------------------------------------------------------- */

static void report(spool *sp, segment *s, uint64_t off, uint64_t len, const uint8_t *bytes, const char *why)
{
    char name[32];
    sp->st.corrupt_ranges++;
    sp->st.corrupt_bytes += len;
    if (sp->cfg.on_damage) {
        seg_name(name, sizeof(name), s->first, "seg");
        sp->cfg.on_damage(sp->cfg.ctx, name, off, len, bytes, why);
    }
}

static int add_skip(segment *s, uint64_t off, uint64_t len)
{
    skip *n = realloc(s->skips, (s->nskips + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    s->skips = n;
    s->skips[s->nskips++] = (skip){off, len};
    return 0;
}

/* Scan one segment file; `last` says whether a bad tail is a torn write (cut) or damage (reported). */
static int recover_segment(spool *sp, segment *s, bool last, uint64_t *prev_seq, char *err, size_t errlen)
{
    char name[32];
    struct stat stb;
    int rc = 0;
    seg_name(name, sizeof(name), s->first, "seg");
    int fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &stb) < 0) {
        rc = -errno;
        set_err(err, errlen, "spool: cannot open %s/%s: %s", sp->dir, name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    uint64_t size = (uint64_t)stb.st_size, end = size, off = SEG_HDR;
    const uint8_t *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            rc = -errno;
            set_err(err, errlen, "spool: cannot map %s/%s: %s", sp->dir, name, strerror(errno));
            close(fd);
            return rc;
        }
    }
    uint32_t hdr[2] = {0, 0};
    uint64_t hfirst = 0;
    if (size >= SEG_HDR) {
        memcpy(hdr, map, 8);
        memcpy(&hfirst, map + 8, 8);
    }
    if (size < SEG_HDR) {
        /* Cut while being created: nothing in it was ever durable. */
        sp->st.truncated_bytes += size;
        end = 0;
    } else if (hdr[0] != SEG_MAGIC || hdr[1] != SEG_VERSION || hfirst != s->first) {
        report(sp, s, 0, SEG_HDR, map, "bad-header");
        add_skip(s, 0, SEG_HDR);
    }
    while (end && off < end) {
        uint32_t len = 0;
        const char *why = frame_check(map + off, end - off, *prev_seq, &len);
        if (!why) {
            uint64_t seq, ts;
            memcpy(&seq, map + off + 16, 8);
            memcpy(&ts, map + off + 24, 8);
            if (!s->first_ts)
                s->first_ts = (int64_t)ts;
            if ((rc = seg_mark(s, seq)) < 0)
                break;
            *prev_seq = seq;
            off += frame_size(len);
            continue;
        }
        uint64_t next = resync(map, off, end, *prev_seq);
        if (next == end && last) {
            sp->st.truncated_bytes += end - off;
            end = off;
            break;
        }
        report(sp, s, off, next - off, map + off, why);
        if ((rc = add_skip(s, off, next - off)) < 0)
            break;
        off = next;
    }
    if (map)
        munmap((void *)map, size);
    if (rc == 0 && end != size) {
        if (ftruncate(fd, (off_t)end) < 0 || fdatasync(fd) < 0) {
            rc = -errno;
            set_err(err, errlen, "spool: cannot truncate %s/%s: %s", sp->dir, name, strerror(errno));
        }
    }
    close(fd);
    s->size = s->durable = end;
    s->sealed = true; /* appends after a restart go to a new segment */
    return rc;
}

static void recover_acks(spool *sp, segment *s)
{
    char name[32];
    uint64_t buf[512];
    ssize_t n;
    seg_name(name, sizeof(name), s->first, "ack");
    int fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    /* A torn last entry (a crash mid-write) is shorter than 8 bytes and ignored; garbage is out of range. */
    while ((n = read(fd, buf, sizeof(buf))) >= 8) {
        for (ssize_t i = 0; i < n / 8; i++) {
            if (seg_pending(s, buf[i])) {
                uint64_t bit = buf[i] - s->first;
                s->bits[bit / 64] &= ~(1ull << (bit % 64));
                s->unacked--;
            }
        }
    }
    close(fd);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int recover(spool *sp, char *err, size_t errlen)
{
    int dfd = dup(sp->dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    uint64_t *firsts = NULL, prev = 0;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    if (!d) {
        rc = -errno;
        if (dfd >= 0)
            close(dfd);
        set_err(err, errlen, "spool: cannot list %s: %s", sp->dir, strerror(-rc));
        return rc;
    }
    while ((e = readdir(d))) {
        char *endp;
        if (strlen(e->d_name) != 24 || strcmp(e->d_name + 20, ".seg"))
            continue;
        uint64_t first = strtoull(e->d_name, &endp, 10);
        if (endp != e->d_name + 20 || first == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *f = realloc(firsts, cap * sizeof(*f));
            if (!f) {
                rc = -ENOMEM;
                break;
            }
            firsts = f;
        }
        firsts[n++] = first;
    }
    closedir(d);
    if (rc == 0 && n)
        qsort(firsts, n, sizeof(*firsts), cmp_u64);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        segment *s = seg_new(firsts[i]);
        if (!s || seg_insert(sp, s) < 0) {
            free(s);
            rc = -ENOMEM;
            break;
        }
        if (prev < firsts[i] - 1)
            prev = firsts[i] - 1;
        rc = recover_segment(sp, s, i == n - 1, &prev, err, errlen);
        recover_acks(sp, s);
        sp->bytes += s->size;
    }
    free(firsts);
    if (rc == 0) {
        /* Past the last segment's name too: a new segment must not take the name of one cut empty. */
        if (sp->nsegs && sp->segs[sp->nsegs - 1]->first > prev)
            prev = sp->segs[sp->nsegs - 1]->first;
        sp->next_seq = prev + 1;
        sp->durable_seq = prev;
        /* Segments fully acknowledged (or emptied by a cut) go now. */
        for (size_t i = sp->nsegs; i-- > 0;)
            seg_maybe_delete(sp, i);
    }
    return rc;
}

/* --- writer ------------------------------------------------------------------- */

static int write_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t w = writev(fd, iov, cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int timed_sync(spool *sp, int fd)
{
    uint64_t t0 = prom_now_ns();
    int rc = fdatasync(fd) < 0 ? -errno : 0;
    prom_histogram_observe(&sp->fsync_hist, prom_now_ns() - t0);
    pthread_mutex_lock(&sp->mu);
    sp->st.fsyncs++;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/*
 * Write one group. Append decided where segments begin (REC_NEWSEG, so that
 * it could count the headers against max_bytes): a flagged frame seals the
 * current segment and opens one named by its sequence number.
 */
static int write_group(spool *sp, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        uint32_t flags;
        uint64_t first_seq;
        memcpy(&flags, buf + off + 12, 4);
        memcpy(&first_seq, buf + off + 16, 8);
        pthread_mutex_lock(&sp->mu);
        segment *prev = sp->nsegs ? sp->segs[sp->nsegs - 1] : NULL, *cur = prev;
        if (cur && (cur->sealed || (flags & REC_NEWSEG)))
            cur = NULL;
        pthread_mutex_unlock(&sp->mu);
        bool created = false;
        if (!cur) {
            /* A new segment: its header, and the directory entry synced below. */
            char name[32];
            uint32_t hdr[4] = {SEG_MAGIC, SEG_VERSION, 0, 0};
            memcpy(hdr + 2, &first_seq, 8);
            segment *s = seg_new(first_seq);
            if (!s)
                return -ENOMEM;
            seg_name(name, sizeof(name), first_seq, "seg");
            s->fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
            struct iovec iov = {hdr, SEG_HDR};
            if (s->fd < 0 || (rc = write_all(s->fd, &iov, 1)) < 0) {
                rc = rc ? rc : -errno;
                seg_free(s);
                return rc;
            }
            s->size = SEG_HDR;
            cur = s;
            created = true;
        }
        /* The frames up to the next that opens a segment. */
        size_t chunk = 0;
        uint64_t size = cur->size; /* only this thread changes it */
        while (off + chunk < len) {
            uint32_t flen, fflags;
            memcpy(&flen, buf + off + chunk + 8, 4);
            memcpy(&fflags, buf + off + chunk + 12, 4);
            if (chunk && (fflags & REC_NEWSEG))
                break;
            size += frame_size(flen);
            chunk += frame_size(flen);
        }
        struct iovec iov = {(void *)(buf + off), chunk};
        if ((rc = write_all(cur->fd, &iov, 1)) < 0 || (rc = timed_sync(sp, cur->fd)) < 0) {
            if (created)
                seg_free(cur);
            return rc;
        }
        if (created && (rc = timed_sync(sp, sp->dirfd)) < 0) {
            seg_free(cur);
            return rc;
        }
        /* Durable: publish the frames, in the table and to waiters. */
        pthread_mutex_lock(&sp->mu);
        if (created) {
            if ((rc = seg_insert(sp, cur)) < 0) {
                pthread_mutex_unlock(&sp->mu);
                seg_free(cur);
                return rc;
            }
            if (prev && !prev->sealed) {
                prev->sealed = true;
                close(prev->fd);
                prev->fd = -1;
            }
            /* The one before is no longer the last: it may go now if all of it is acknowledged. */
            if (prev)
                seg_maybe_delete(sp, sp->nsegs - 2);
        }
        uint64_t last = sp->durable_seq;
        for (size_t o = off; o < off + chunk;) {
            uint32_t flen;
            uint64_t seq;
            int64_t ts;
            memcpy(&flen, buf + o + 8, 4);
            memcpy(&seq, buf + o + 16, 8);
            memcpy(&ts, buf + o + 24, 8);
            if (!cur->first_ts)
                cur->first_ts = ts;
            if ((rc = seg_mark(cur, seq)) < 0)
                break;
            last = seq;
            o += frame_size(flen);
        }
        cur->size = cur->durable = size;
        sp->durable_seq = last;
        pthread_cond_broadcast(&sp->durable_cv);
        pthread_mutex_unlock(&sp->mu);
        if (rc < 0)
            return rc;
        if (sp->cfg.on_durable)
            sp->cfg.on_durable(sp->cfg.ctx, last);
        off += chunk;
    }
    return rc;
}

static void *writer_main(void *arg)
{
    spool *sp = arg;
    uint8_t *spare = NULL;
    size_t spare_cap = 0;
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->group_len && !sp->closing)
            pthread_cond_wait(&sp->wake_writer, &sp->mu);
        if (!sp->group_len)
            break;
        /* The window: let more records join unless the group is big enough or we are closing. */
        uint64_t until = sp->group_start_ns + (uint64_t)sp->cfg.group_window_us * 1000;
        while (!sp->closing && sp->group_len < sp->cfg.group_bytes && prom_now_ns() < until) {
            struct timespec dl = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
            pthread_cond_timedwait(&sp->wake_writer, &sp->mu, &dl);
        }
        uint8_t *buf = sp->group;
        size_t len = sp->group_len, cap = sp->group_cap;
        sp->group = spare;
        sp->group_cap = spare_cap;
        sp->group_len = 0;
        pthread_mutex_unlock(&sp->mu);

        int rc = write_group(sp, buf, len);
        spare = buf;
        spare_cap = cap;

        pthread_mutex_lock(&sp->mu);
        if (rc < 0) {
            sp->error = rc;
            pthread_cond_broadcast(&sp->durable_cv);
            break;
        }
    }
    pthread_mutex_unlock(&sp->mu);
    free(spare);
    return NULL;
}

/* --- open / close ---------------------------------------------------------------- */

static int lock_dir(spool *sp, char *err, size_t errlen)
{
    sp->lockfd = openat(sp->dirfd, "spool.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->lockfd < 0) {
        int e = errno;
        set_err(err, errlen, "spool: cannot create %s/spool.lock: %s", sp->dir, strerror(e));
        return -e;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(sp->lockfd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            set_err(err, errlen, "spool: %s is in use by another process (pid %s)", sp->dir,
                    *pid ? pid : "unknown");
        else
            set_err(err, errlen, "spool: cannot lock %s/spool.lock: %s", sp->dir, strerror(e));
        return -e;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(sp->lockfd, 0) < 0 || pwrite(sp->lockfd, pid, (size_t)n, 0) != n) {
        int e = errno;
        set_err(err, errlen, "spool: cannot write %s/spool.lock: %s", sp->dir, strerror(e));
        return -e;
    }
    return 0;
}

static void spool_free(spool *sp)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        seg_free(sp->segs[i]);
    free(sp->segs);
    free(sp->group);
    if (sp->rd_map)
        munmap((void *)sp->rd_map, sp->rd_maplen);
    if (sp->lockfd >= 0)
        close(sp->lockfd); /* releases the flock */
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->wake_writer);
    pthread_cond_destroy(&sp->durable_cv);
    free(sp->dir);
    free(sp);
}

int spool_open(const spool_config *cfg, spool **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (!cfg->dir || !*cfg->dir) {
        set_err(err, errlen, "spool: no directory");
        return -EINVAL;
    }
    spool *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return -ENOMEM;
    sp->cfg = *cfg;
    if (!sp->cfg.max_bytes)
        sp->cfg.max_bytes = 1ull << 30;
    if (!sp->cfg.segment_bytes)
        sp->cfg.segment_bytes = 64ull << 20;
    /* Room for a few segments, so that a full spool always has a sealed one to free by acks. */
    if (sp->cfg.segment_bytes > sp->cfg.max_bytes / 4)
        sp->cfg.segment_bytes = sp->cfg.max_bytes / 4;
    if (!sp->cfg.group_bytes)
        sp->cfg.group_bytes = 1u << 20;
    sp->dirfd = sp->lockfd = -1;
    pthread_mutex_init(&sp->mu, NULL);
    mono_cond_init(&sp->durable_cv);
    mono_cond_init(&sp->wake_writer);
    sp->dir = strdup(cfg->dir);
    if (!sp->dir) {
        spool_free(sp);
        return -ENOMEM;
    }
    if (mkdir(sp->dir, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        set_err(err, errlen, "spool: cannot create directory %s: %s", sp->dir, strerror(errno));
        spool_free(sp);
        return rc;
    }
    sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        rc = -errno;
        set_err(err, errlen, "spool: cannot open directory %s: %s", sp->dir, strerror(errno));
        spool_free(sp);
        return rc;
    }
    if ((rc = lock_dir(sp, err, errlen)) < 0 || (rc = recover(sp, err, errlen)) < 0) {
        spool_free(sp);
        return rc;
    }
    /* Learn now, not at the first append, that the directory takes no writes. */
    if (faccessat(sp->dirfd, ".", W_OK, AT_EACCESS) < 0) {
        rc = -errno;
        set_err(err, errlen, "spool: directory %s is not writable: %s", sp->dir, strerror(errno));
        spool_free(sp);
        return rc;
    }
    if ((rc = pthread_create(&sp->writer, NULL, writer_main, sp)) != 0) {
        set_err(err, errlen, "spool: cannot start the writer: %s", strerror(rc));
        spool_free(sp);
        return -rc;
    }
    sp->writer_started = true;
    *out = sp;
    return 0;
}

void spool_stop(spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    sp->closing = true;
    pthread_cond_broadcast(&sp->wake_writer);
    pthread_cond_broadcast(&sp->durable_cv);
    bool join = sp->writer_started;
    sp->writer_started = false;
    pthread_mutex_unlock(&sp->mu);
    if (join)
        pthread_join(sp->writer, NULL);
}

void spool_close(spool *sp)
{
    if (!sp)
        return;
    spool_stop(sp);
    for (size_t i = 0; i < sp->nsegs; i++) {
        ack_flush(sp, sp->segs[i]);
        if (sp->segs[i]->ack_fd >= 0)
            fdatasync(sp->segs[i]->ack_fd);
    }
    spool_free(sp);
}

/* --- producers ----------------------------------------------------------------- */

int spool_appendv(spool *sp, const struct iovec *iov, int iovcnt, uint64_t *seq)
{
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > SPOOL_MAX_RECORD)
        return -EMSGSIZE;
    size_t fs = frame_size(len);
    int64_t now = wall_ms();
    uLong pcrc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < iovcnt; i++)
        pcrc = crc32_z(pcrc, iov[i].iov_base, iov[i].iov_len);
    pthread_mutex_lock(&sp->mu);
    int rc = sp->error ? sp->error : sp->closing ? -EPIPE : 0;
    /* A segment header too may be needed: count it, so that the bound holds on disk. */
    /* Where the writer will put it: a new segment costs a header, counted now so that the bound holds. */
    bool newseg = !sp->tail_size || (sp->tail_size > SEG_HDR && sp->tail_size + fs > sp->cfg.segment_bytes);
    uint64_t cost = fs + (newseg ? SEG_HDR : 0);
    if (!rc && sp->bytes + cost > sp->cfg.max_bytes)
        rc = -ENOSPC;
    if (!rc && sp->group_len + fs > sp->group_cap) {
        size_t cap = sp->group_cap ? sp->group_cap : 64 << 10;
        while (cap < sp->group_len + fs)
            cap *= 2;
        uint8_t *g = realloc(sp->group, cap);
        if (!g)
            rc = -ENOMEM;
        else {
            sp->group = g;
            sp->group_cap = cap;
        }
    }
    if (rc) {
        pthread_mutex_unlock(&sp->mu);
        return rc;
    }
    uint8_t *p = sp->group + sp->group_len;
    uint32_t magic = REC_MAGIC, len32 = (uint32_t)len, flags = newseg ? REC_NEWSEG : 0;
    uint64_t s = sp->next_seq++;
    memcpy(p, &magic, 4);
    memcpy(p + 8, &len32, 4);
    memcpy(p + 12, &flags, 4);
    memcpy(p + 16, &s, 8);
    memcpy(p + 24, &now, 8);
    size_t o = REC_HDR;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len)
            memcpy(p + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    memset(p + o, 0, fs - o);
    uint32_t crc = header_crc(pcrc, p);
    memcpy(p + 4, &crc, 4);
    if (!sp->group_len)
        sp->group_start_ns = prom_now_ns();
    sp->group_len += fs;
    sp->bytes += cost;
    sp->tail_size = (newseg ? SEG_HDR : sp->tail_size) + fs;
    /* Wake the writer for the first record (it starts the window) and when the group is full. */
    if (sp->group_len == fs || sp->group_len >= sp->cfg.group_bytes)
        pthread_cond_signal(&sp->wake_writer);
    pthread_mutex_unlock(&sp->mu);
    *seq = s;
    return 0;
}

uint64_t spool_durable(spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t d = sp->durable_seq;
    pthread_mutex_unlock(&sp->mu);
    return d;
}

int spool_wait_durable(spool *sp, uint64_t seq, int timeout_ms)
{
    struct timespec dl = mono_deadline(timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&sp->mu);
    while (sp->durable_seq < seq && !sp->error && rc == 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&sp->durable_cv, &sp->mu);
        else if (pthread_cond_timedwait(&sp->durable_cv, &sp->mu, &dl) == ETIMEDOUT)
            rc = sp->durable_seq >= seq ? 0 : -ETIMEDOUT;
    }
    if (sp->durable_seq < seq && sp->error)
        rc = sp->error;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/* --- replay --------------------------------------------------------------------- */

static void ack_locked(spool *sp, uint64_t seq)
{
    size_t i = seg_find(sp, seq);
    if (!i)
        return;
    segment *s = sp->segs[i - 1];
    if (!seg_pending(s, seq))
        return;
    uint64_t bit = seq - s->first;
    s->bits[bit / 64] &= ~(1ull << (bit % 64));
    s->unacked--;
    s->ackbuf[s->nack++] = seq;
    if (s->nack == ACK_BATCH)
        ack_flush(sp, s);
    seg_maybe_delete(sp, i - 1);
}

void spool_ack(spool *sp, uint64_t seq)
{
    pthread_mutex_lock(&sp->mu);
    ack_locked(sp, seq);
    pthread_mutex_unlock(&sp->mu);
}

/* Map the reader's segment: the whole length it may grow to, so that appends need no remap. */
static int rd_map(spool *sp, segment *s)
{
    char name[32];
    if (sp->rd_map)
        munmap((void *)sp->rd_map, sp->rd_maplen);
    sp->rd_map = NULL;
    seg_name(name, sizeof(name), s->first, "seg");
    int fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = sp->cfg.segment_bytes + frame_size(SPOOL_MAX_RECORD) + SEG_HDR;
    if (len < s->size)
        len = s->size;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return -e;
    sp->rd_map = m;
    sp->rd_maplen = len;
    sp->rd_seg = s->first;
    sp->rd_off = SEG_HDR;
    return 0;
}

int spool_next(spool *sp, spool_record *rec, int timeout_ms)
{
    struct timespec dl = mono_deadline(timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        if (sp->closing) {
            rc = -EPIPE;
            break;
        }
        /* The reader's segment, or the next one still there. */
        size_t i = sp->rd_seg ? seg_find(sp, sp->rd_seg) : 0;
        segment *s = i ? sp->segs[i - 1] : NULL;
        if (!s || s->first != sp->rd_seg) {
            /* Deleted (all acknowledged), or the first call: on to the next one there is. */
            if (i < sp->nsegs) {
                if ((rc = rd_map(sp, sp->segs[i])) < 0)
                    break;
                continue;
            }
            s = NULL;
        }
        if (s && sp->rd_off >= s->durable) {
            if (s->sealed && i < sp->nsegs) {
                if ((rc = rd_map(sp, sp->segs[i])) < 0)
                    break;
                continue;
            }
            s = NULL;
        }
        if (!s) {
            if (timeout_ms == 0)
                break;
            if (timeout_ms < 0)
                pthread_cond_wait(&sp->durable_cv, &sp->mu);
            else if (pthread_cond_timedwait(&sp->durable_cv, &sp->mu, &dl) == ETIMEDOUT)
                timeout_ms = 0;
            continue;
        }
        /* A range reported at open: step over it. */
        bool skipped = false;
        for (size_t k = 0; k < s->nskips; k++)
            if (s->skips[k].off == sp->rd_off) {
                sp->rd_off += s->skips[k].len;
                skipped = true;
            }
        if (skipped)
            continue;
        const uint8_t *p = sp->rd_map + sp->rd_off;
        uint32_t len = 0;
        const char *why = frame_check(p, s->durable - sp->rd_off, sp->rd_last, &len);
        if (why) {
            /* Damaged since open: report it once, as recovery would have. */
            uint64_t next = resync(sp->rd_map, sp->rd_off, s->durable, sp->rd_last);
            report(sp, s, sp->rd_off, next - sp->rd_off, p, why);
            sp->rd_off = next;
            continue;
        }
        uint64_t seq;
        int64_t ts;
        memcpy(&seq, p + 16, 8);
        memcpy(&ts, p + 24, 8);
        sp->rd_off += frame_size(len);
        sp->rd_last = seq;
        if (!seg_pending(s, seq))
            continue; /* acknowledged before a restart */
        if (sp->cfg.max_age_ms && wall_ms() - ts > (int64_t)sp->cfg.max_age_ms) {
            sp->st.expired_records++;
            sp->st.expired_bytes += len;
            ack_locked(sp, seq);
            if (sp->cfg.on_drop) {
                pthread_mutex_unlock(&sp->mu);
                sp->cfg.on_drop(sp->cfg.ctx, seq, len, "max-age");
                pthread_mutex_lock(&sp->mu);
            }
            continue;
        }
        rec->seq = seq;
        rec->time_ms = ts;
        rec->data = p + REC_HDR;
        rec->len = len;
        rc = 1;
        break;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

void spool_get_stats(spool *sp, spool_stats *st)
{
    pthread_mutex_lock(&sp->mu);
    *st = sp->st;
    st->bytes = sp->bytes;
    st->segments = sp->nsegs;
    st->durable_seq = sp->durable_seq;
    st->error = -sp->error;
    st->records = 0;
    st->oldest_age_ms = 0;
    for (size_t i = 0; i < sp->nsegs; i++) {
        segment *s = sp->segs[i];
        st->records += s->unacked;
        if (s->unacked && !st->oldest_age_ms && s->first_ts) {
            int64_t age = wall_ms() - s->first_ts;
            st->oldest_age_ms = age > 0 ? (uint64_t)age : 1;
        }
    }
    pthread_mutex_unlock(&sp->mu);
}

const prom_histogram *spool_fsync_histogram(spool *sp)
{
    return &sp->fsync_hist;
}
