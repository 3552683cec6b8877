// Storage for the gateway's spool (issue 16), chosen by measurement: the same
// framed records appended with the same group commit to (1) a bare segmented
// log (write + fdatasync: the floor any spool can reach), (2) LMDB, (3) SQLite
// in WAL mode, on one disk in one run; then replayed in order and deleted, and
// crashed with kill -9. perf/spool/run drives it; perf/README.md has results.
//
//   spool_compare DIR [--seconds S] [--repeat R] [--rounds N] [--quick]
//
// Every engine stores the same bytes: a 16-byte frame header (length, CRC32
// of the payload, record id) and the payload, built by the producer threads.
// One writer thread takes up to W queued records, appends them and commits
// once: the producers never wait, so every group is exactly W records.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define HDR            16
#define SEGMENT_BYTES  (64u << 20)
#define ACK_CHUNK      1024           // records acknowledged (deleted) at once on replay
#define CASE_CAP_BYTES (768ull << 20) // stop a case early past this much payload

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "spool_compare: %s: %s\n", what, detail);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// ---- records --------------------------------------------------------------

static unsigned char *pool; // incompressible payload bytes, records are slices
#define POOL_BYTES (1u << 20)

typedef struct {
    uint64_t id;
    uint32_t len; // whole frame, header included
    unsigned char *buf;
} rec;

static void put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

// The costly part of framing (copy, CRC of the payload) is done by the
// producer before it knows the id; stamp_id, under the queue's lock, adds the
// id and folds it into the CRC, so ids are in queue order without producers
// waiting for each other's turn.
static void frame_payload(rec *r, uint32_t payload, unsigned seed)
{
    r->len = HDR + payload;
    r->buf = malloc(r->len);
    if (!r->buf)
        die("malloc", "out of memory");
    memcpy(r->buf + HDR, pool + (seed * 7919u) % (POOL_BYTES - payload), payload);
    put32(r->buf, payload);
    put32(r->buf + 4, (uint32_t)crc32(0, r->buf + HDR, payload));
}

static void stamp_id(rec *r, uint64_t id)
{
    r->id = id;
    memcpy(r->buf + 8, &id, 8);
    put32(r->buf + 4, (uint32_t)crc32(get32(r->buf + 4), r->buf + 8, 8));
}

static void frame(rec *r, uint64_t id, uint32_t payload)
{
    frame_payload(r, payload, (unsigned)id);
    stamp_id(r, id);
}

// A stored frame is intact when its length and CRC hold; returns its id or 0.
static uint64_t check(const unsigned char *p, size_t avail)
{
    if (avail < HDR)
        return 0;
    uint32_t payload = get32(p);
    if (payload > POOL_BYTES || HDR + (size_t)payload > avail)
        return 0;
    if ((uint32_t)crc32(crc32(0, p + HDR, payload), p + 8, 8) != get32(p + 4))
        return 0;
    uint64_t id;
    memcpy(&id, p + 8, 8);
    return id;
}

// ---- engines ---------------------------------------------------------------

typedef struct engine engine;
struct engine {
    const char *name;
    void *(*open)(const char *dir, size_t *repaired);
    void (*append)(void *h, rec *r, int n); // durable on return
    // Read everything in order, checking each frame; with del, delete it in
    // chunks as the spool deletes what Kafka acknowledged. Returns the count;
    // *first/*last get the ids seen, *bad the frames that failed their check.
    uint64_t (*replay)(void *h, bool del, uint64_t *first, uint64_t *last, uint64_t *bad);
    void (*close)(void *h);
};

static const char *sqlite_sync = "FULL";

// (1) the bare log: segment files named by their first id, append-only.
typedef struct {
    char dir[512];
    int fd; // the open segment
    uint64_t seg_bytes;
    int dirfd;
} bare;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t *bare_segments(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        die(dir, strerror(errno));
    uint64_t *v = NULL;
    size_t cap = 0;
    *n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t first;
        char tail[8];
        if (sscanf(e->d_name, "%" SCNu64 ".%7s", &first, tail) == 2 && !strcmp(tail, "seg")) {
            if (*n == cap)
                v = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
            v[(*n)++] = first;
        }
    }
    closedir(d);
    if (*n) // qsort must not get NULL, even for no elements
        qsort(v, *n, sizeof *v, cmp_u64);
    return v;
}

static int bare_open_seg(bare *b, uint64_t first, int flags)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%020" PRIu64 ".seg", b->dir, first);
    return open(path, flags, 0644);
}

// Reads a whole segment; *valid gets the length of its prefix of intact frames.
static unsigned char *bare_slurp(bare *b, uint64_t first, size_t *len, size_t *valid)
{
    int fd = bare_open_seg(b, first, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st))
        die("segment", strerror(errno));
    unsigned char *buf = malloc(st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, st.st_size - got);
        if (r <= 0)
            die("read segment", r ? strerror(errno) : "short");
        got += r;
    }
    close(fd);
    size_t off = 0;
    while (off < got && check(buf + off, got - off))
        off += HDR + get32(buf + off);
    *len = got;
    *valid = off;
    return buf;
}

static void *bare_open(const char *dir, size_t *repaired)
{
    bare *b = calloc(1, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    b->dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (b->dirfd < 0)
        die(dir, strerror(errno));
    size_t n;
    uint64_t *segs = bare_segments(dir, &n);
    *repaired = 0;
    if (n) {
        // Recovery: a torn tail (a frame cut short or never finished) can
        // only be in the last segment; cut it at the last intact frame.
        size_t len, valid;
        unsigned char *buf = bare_slurp(b, segs[n - 1], &len, &valid);
        free(buf);
        b->fd = bare_open_seg(b, segs[n - 1], O_WRONLY | O_APPEND);
        if (valid < len) {
            if (ftruncate(b->fd, valid) || fdatasync(b->fd))
                die("truncate", strerror(errno));
            *repaired = len - valid;
        }
        b->seg_bytes = valid;
    } else {
        b->fd = bare_open_seg(b, 1, O_WRONLY | O_APPEND | O_CREAT | O_EXCL);
        fsync(b->dirfd);
    }
    if (b->fd < 0)
        die("open segment", strerror(errno));
    free(segs);
    return b;
}

static void bare_append(void *h, rec *r, int n)
{
    bare *b = h;
    if (b->seg_bytes >= SEGMENT_BYTES) {
        // The old segment is durable already (every group ends in fdatasync);
        // the new one's name must be durable before records in it count.
        close(b->fd);
        b->fd = bare_open_seg(b, r[0].id, O_WRONLY | O_APPEND | O_CREAT | O_EXCL);
        if (b->fd < 0 || fsync(b->dirfd))
            die("new segment", strerror(errno));
        b->seg_bytes = 0;
    }
    struct iovec iov[1024];
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        iov[i] = (struct iovec){r[i].buf, r[i].len};
        total += r[i].len;
    }
    for (int i = 0; i < n;) { // writev may write less: go on where it stopped
        ssize_t w = writev(b->fd, iov + i, n - i < 1024 ? n - i : 1024);
        if (w < 0)
            die("writev", strerror(errno));
        while (i < n && (size_t)w >= iov[i].iov_len)
            w -= iov[i++].iov_len;
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= w;
        }
    }
    if (fdatasync(b->fd))
        die("fdatasync", strerror(errno));
    b->seg_bytes += total;
}

static uint64_t bare_replay(void *h, bool del, uint64_t *first, uint64_t *last, uint64_t *bad)
{
    bare *b = h;
    size_t n, cap = 2 * POOL_BYTES; // room for the largest frame, read 1 MiB at a time
    uint64_t *segs = bare_segments(b->dir, &n), count = 0;
    unsigned char *buf = malloc(cap);
    for (size_t s = 0; s < n; s++) {
        int fd = bare_open_seg(b, segs[s], O_RDONLY);
        if (fd < 0)
            die("segment", strerror(errno));
        size_t have = 0, off = 0;
        for (;;) {
            ssize_t r = read(fd, buf + have, cap - have < POOL_BYTES ? cap - have : POOL_BYTES);
            if (r < 0)
                die("read segment", strerror(errno));
            have += r;
            uint64_t id;
            while ((id = check(buf + off, have - off))) {
                if (id != (count ? *last + 1 : id))
                    (*bad)++;
                if (!count++)
                    *first = id;
                *last = id;
                off += HDR + get32(buf + off);
            }
            if (r == 0)
                break;
            memmove(buf, buf + off, have - off); // the partial frame at the end
            have -= off;
            off = 0;
        }
        close(fd);
        if (off < have) // the real spool resyncs past a bad frame; here: count it
            (*bad)++;
        if (del && s + 1 < n) { // every record in it acknowledged: unlink
            char path[1100];
            snprintf(path, sizeof path, "%s/%020" PRIu64 ".seg", b->dir, segs[s]);
            unlink(path);
        }
    }
    if (del && n) { // the open segment: emptied rather than unlinked
        if (ftruncate(b->fd, 0))
            die("truncate", strerror(errno));
        b->seg_bytes = 0;
    }
    free(buf);
    free(segs);
    return count;
}

static void bare_close(void *h)
{
    bare *b = h;
    close(b->fd);
    close(b->dirfd);
    free(b);
}

// (2) LMDB: one key per record (the id, MDB_INTEGERKEY, appended in order),
// one write transaction per group, committed with the default sync.
typedef struct {
    MDB_env *env;
    MDB_dbi dbi;
} lmdb;

#define LMDB_OK(call)                                                                                        \
    do {                                                                                                     \
        int rc_ = (call);                                                                                    \
        if (rc_)                                                                                             \
            die(#call, mdb_strerror(rc_));                                                                   \
    } while (0)

static void *lmdb_open(const char *dir, size_t *repaired)
{
    lmdb *l = calloc(1, sizeof *l);
    MDB_txn *txn;
    *repaired = 0; // LMDB has nothing to repair: the last committed meta page wins
    LMDB_OK(mdb_env_create(&l->env));
    LMDB_OK(mdb_env_set_mapsize(l->env, 8ull << 30));
    LMDB_OK(mdb_env_open(l->env, dir, 0, 0644));
    LMDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &l->dbi));
    LMDB_OK(mdb_txn_commit(txn));
    return l;
}

static void lmdb_append(void *h, rec *r, int n)
{
    lmdb *l = h;
    MDB_txn *txn;
    LMDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
    for (int i = 0; i < n; i++) {
        MDB_val k = {8, &r[i].id}, v = {r[i].len, r[i].buf};
        LMDB_OK(mdb_put(txn, l->dbi, &k, &v, MDB_APPEND));
    }
    LMDB_OK(mdb_txn_commit(txn));
}

static uint64_t lmdb_replay(void *h, bool del, uint64_t *first, uint64_t *last, uint64_t *bad)
{
    lmdb *l = h;
    uint64_t count = 0, from = 0;
    for (;;) { // a chunk read in a read transaction, then deleted in a write one
        MDB_txn *txn;
        MDB_cursor *c;
        MDB_val k = {8, &from}, v;
        int n = 0;
        uint64_t chunk_last = 0;
        LMDB_OK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn));
        LMDB_OK(mdb_cursor_open(txn, l->dbi, &c));
        int rc = mdb_cursor_get(c, &k, &v, from ? MDB_SET_RANGE : MDB_FIRST);
        if (rc == 0 && from && !memcmp(k.mv_data, &from, 8))
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        for (; rc == 0 && n < ACK_CHUNK; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), n++) {
            uint64_t key;
            memcpy(&key, k.mv_data, 8);
            if (check(v.mv_data, v.mv_size) != key)
                (*bad)++;
            if (!count++)
                *first = key;
            *last = chunk_last = key;
        }
        if (rc && rc != MDB_NOTFOUND)
            die("mdb_cursor_get", mdb_strerror(rc));
        mdb_cursor_close(c);
        mdb_txn_abort(txn);
        if (!n)
            break;
        if (del) {
            LMDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
            LMDB_OK(mdb_cursor_open(txn, l->dbi, &c));
            for (int i = 0; i < n; i++) {
                LMDB_OK(mdb_cursor_get(c, &k, &v, MDB_FIRST));
                LMDB_OK(mdb_cursor_del(c, 0));
            }
            mdb_cursor_close(c);
            LMDB_OK(mdb_txn_commit(txn));
        }
        from = chunk_last;
    }
    return count;
}

static void lmdb_close(void *h)
{
    lmdb *l = h;
    mdb_env_close(l->env);
    free(l);
}

// (3) SQLite, WAL: a row per record, one transaction per group.
typedef struct {
    sqlite3 *db;
    sqlite3_stmt *ins, *begin, *commit;
} sqlw;

static void sql_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err ? err : "?");
}

static void sql_step(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        die("sqlite3_step", sqlite3_errmsg(db));
    sqlite3_reset(st);
}

static void *sql_open(const char *dir, size_t *repaired)
{
    sqlw *s = calloc(1, sizeof *s);
    char path[1100], pragma[64];
    *repaired = 0; // a torn WAL tail is dropped by SQLite itself, unseen
    snprintf(path, sizeof path, "%s/spool.db", dir);
    if (sqlite3_open(path, &s->db) != SQLITE_OK)
        die(path, sqlite3_errmsg(s->db));
    sql_exec(s->db, "PRAGMA journal_mode=WAL");
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", sqlite_sync);
    sql_exec(s->db, pragma);
    sql_exec(s->db, "CREATE TABLE IF NOT EXISTS spool(id INTEGER PRIMARY KEY, rec BLOB NOT NULL)");
    sqlite3_prepare_v2(s->db, "INSERT INTO spool(id, rec) VALUES(?, ?)", -1, &s->ins, NULL);
    sqlite3_prepare_v2(s->db, "BEGIN", -1, &s->begin, NULL);
    sqlite3_prepare_v2(s->db, "COMMIT", -1, &s->commit, NULL);
    return s;
}

static void sql_append(void *h, rec *r, int n)
{
    sqlw *s = h;
    sql_step(s->db, s->begin);
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int64(s->ins, 1, (sqlite3_int64)r[i].id);
        sqlite3_bind_blob(s->ins, 2, r[i].buf, r[i].len, SQLITE_STATIC);
        sql_step(s->db, s->ins);
    }
    sql_step(s->db, s->commit);
}

static uint64_t sql_replay(void *h, bool del, uint64_t *first, uint64_t *last, uint64_t *bad)
{
    sqlw *s = h;
    sqlite3_stmt *sel, *dl;
    sqlite3_prepare_v2(s->db, "SELECT id, rec FROM spool WHERE id > ? ORDER BY id LIMIT 1024", -1, &sel,
                       NULL);
    sqlite3_prepare_v2(s->db, "DELETE FROM spool WHERE id <= ?", -1, &dl, NULL);
    uint64_t count = 0, from = 0;
    for (;;) {
        int n = 0, rc;
        sqlite3_bind_int64(sel, 1, (sqlite3_int64)from);
        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
            uint64_t id = (uint64_t)sqlite3_column_int64(sel, 0);
            if (check(sqlite3_column_blob(sel, 1), sqlite3_column_bytes(sel, 1)) != id)
                (*bad)++;
            if (!count++)
                *first = id;
            *last = from = id;
            n++;
        }
        if (rc != SQLITE_DONE)
            die("select", sqlite3_errmsg(s->db));
        sqlite3_reset(sel);
        if (!n)
            break;
        if (del) {
            sqlite3_bind_int64(dl, 1, (sqlite3_int64)from);
            sql_step(s->db, dl); // autocommit: one durable transaction per chunk
        }
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(dl);
    return count;
}

static void sql_close(void *h)
{
    sqlw *s = h;
    sqlite3_finalize(s->ins);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_close(s->db);
    free(s);
}

// No storage at all: what the producers and the queue alone allow, so a row
// near it is bound by framing records, not by the disk.
static uint64_t none_count;
static void *none_open(const char *dir, size_t *repaired)
{
    (void)dir;
    *repaired = 0;
    return &none_count;
}
static void none_append(void *h, rec *r, int n)
{
    (void)r;
    *(uint64_t *)h += n;
}
static uint64_t none_replay(void *h, bool del, uint64_t *first, uint64_t *last, uint64_t *bad)
{
    uint64_t n = *(uint64_t *)h;
    (void)bad;
    *first = 1;
    *last = n;
    if (del)
        *(uint64_t *)h = 0;
    return n;
}
static void none_close(void *h)
{
    (void)h;
}

static const engine engines[] = {
    {"bare log", bare_open, bare_append, bare_replay, bare_close},
    {"LMDB", lmdb_open, lmdb_append, lmdb_replay, lmdb_close},
    {"SQLite WAL FULL", sql_open, sql_append, sql_replay, sql_close},
    {"SQLite WAL NORMAL", sql_open, sql_append, sql_replay, sql_close},
    {"(no storage)", none_open, none_append, none_replay, none_close},
};
#define N_ENGINES (int)(sizeof engines / sizeof *engines)

static void use_engine(int e)
{
    sqlite_sync = e == 3 ? "NORMAL" : "FULL";
}

// ---- files -----------------------------------------------------------------

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

// Bytes the files take on disk (allocated blocks); drop_cache also evicts them
// from the page cache, so replay reads from the disk, as after a restart.
static uint64_t dir_usage(const char *dir, bool drop_cache)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t total = 0;
    char path[1024];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (!stat(path, &st))
                total += (uint64_t)st.st_blocks * 512;
            int fd = drop_cache ? open(path, O_RDONLY) : -1;
            if (fd >= 0) {
                fdatasync(fd);
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                close(fd);
            }
        }
    if (d)
        closedir(d);
    return total;
}

// ---- throughput: N producers, one writer ---------------------------------

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    rec *ring;
    size_t cap, head, n;
    uint64_t next_id;
    uint32_t payload;
    bool stop;
} queue;

static void *producer(void *arg)
{
    queue *q = arg;
    for (unsigned seed = (unsigned)(uintptr_t)&seed;; seed++) {
        rec r;
        frame_payload(&r, q->payload, seed); // the framing work is the producers', as in the gateway
        pthread_mutex_lock(&q->mu);
        while (q->n == q->cap && !q->stop)
            pthread_cond_wait(&q->not_full, &q->mu);
        if (q->stop) {
            pthread_mutex_unlock(&q->mu);
            free(r.buf);
            return NULL;
        }
        stamp_id(&r, q->next_id++);
        q->ring[(q->head + q->n++) % q->cap] = r;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
}

typedef struct {
    double appends_s, mb_s, p50_ms, p99_ms, replay_mb_s, replay_rec_s, space;
} result;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static result run_case(int e, const char *dir, uint32_t payload, int window, int producers, double seconds)
{
    const engine *en = &engines[e];
    use_engine(e);
    rm_rf(dir);
    mkdir(dir, 0755);
    size_t repaired;
    void *h = en->open(dir, &repaired);

    queue q = {.cap = window * 2 > 256 ? window * 2 : 256, .next_id = 1, .payload = payload};
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    pthread_cond_init(&q.not_full, NULL);
    q.ring = calloc(q.cap, sizeof *q.ring);
    pthread_t th[16];
    for (int i = 0; i < producers; i++)
        pthread_create(&th[i], NULL, producer, &q);

    size_t lat_cap = 1 << 20, nlat = 0;
    double *lat = malloc(lat_cap * sizeof *lat);
    rec *group = malloc(window * sizeof *group);
    uint64_t records = 0, bytes = 0;
    double t0 = now();
    while (now() - t0 < seconds && bytes < CASE_CAP_BYTES) {
        pthread_mutex_lock(&q.mu);
        while (q.n < (size_t)window)
            pthread_cond_wait(&q.not_empty, &q.mu);
        for (int i = 0; i < window; i++) {
            group[i] = q.ring[q.head];
            q.head = (q.head + 1) % q.cap;
            q.n--;
        }
        pthread_cond_broadcast(&q.not_full);
        pthread_mutex_unlock(&q.mu);
        double c0 = now();
        en->append(h, group, window);
        if (nlat < lat_cap)
            lat[nlat++] = now() - c0;
        for (int i = 0; i < window; i++) {
            bytes += group[i].len - HDR;
            free(group[i].buf);
        }
        records += window;
    }
    double elapsed = now() - t0;
    pthread_mutex_lock(&q.mu);
    q.stop = true;
    pthread_cond_broadcast(&q.not_full);
    pthread_mutex_unlock(&q.mu);
    for (int i = 0; i < producers; i++)
        pthread_join(th[i], NULL);
    for (; q.n; q.n--, q.head = (q.head + 1) % q.cap)
        free(q.ring[q.head].buf);

    result r = {.appends_s = records / elapsed, .mb_s = bytes / elapsed / 1e6};
    qsort(lat, nlat, sizeof *lat, cmp_d);
    r.p50_ms = lat[nlat / 2] * 1e3;
    r.p99_ms = lat[nlat * 99 / 100] * 1e3;
    r.space = (double)dir_usage(dir, false) / bytes; // before SQLite's close folds the WAL in
    en->close(h);
    dir_usage(dir, true);

    // Replay: reopen (cold cache), read all in order, delete as acknowledged.
    t0 = now();
    h = en->open(dir, &repaired);
    uint64_t first = 0, last = 0, bad = 0;
    uint64_t n = en->replay(h, true, &first, &last, &bad);
    en->close(h);
    double rt = now() - t0;
    if (n != records || bad || first != 1 || last != records) {
        fprintf(stderr,
                "%s: replay saw %" PRIu64 " records (%" PRIu64 "..%" PRIu64 ", %" PRIu64 " bad), %" PRIu64
                " were written\n",
                en->name, n, first, last, bad, records);
        exit(1);
    }
    h = en->open(dir, &repaired); // deleted means gone: nothing left to replay
    n = en->replay(h, false, &first, &last, &bad);
    en->close(h);
    if (n)
        die(en->name, "records left after replay deleted them all");
    r.replay_mb_s = bytes / rt / 1e6;
    r.replay_rec_s = records / rt;
    rm_rf(dir);
    free(lat);
    free(group);
    free(q.ring);
    return r;
}

// ---- the floor: one 4 KiB write + fdatasync --------------------------------

static void fsync_floor(const char *dir, double seconds)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/floor", dir);
    mkdir(dir, 0755);
    unsigned char block[4096];
    memcpy(block, pool, sizeof block);
    for (int mode = 0; mode < 2; mode++) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die(path, strerror(errno));
        if (mode == 0) { // overwrite in place: the data block only
            if (pwrite(fd, block, sizeof block, 0) != sizeof block || fsync(fd))
                die("pwrite", strerror(errno));
        }
        size_t cap = 1 << 20, n = 0;
        double *lat = malloc(cap * sizeof *lat), t0 = now();
        off_t off = 0;
        while (now() - t0 < seconds && n < cap) {
            double c0 = now();
            if (pwrite(fd, block, sizeof block, mode ? off : 0) != sizeof block || fdatasync(fd))
                die("pwrite", strerror(errno));
            off += sizeof block;
            lat[n++] = now() - c0;
        }
        double el = now() - t0;
        qsort(lat, n, sizeof *lat, cmp_d);
        printf("floor  4 KiB %-27s %8.0f /s   p50 %6.3f ms   p99 %6.3f ms\n",
               mode ? "append + fdatasync:" : "overwrite + fdatasync:", n / el, lat[n / 2] * 1e3,
               lat[n * 99 / 100] * 1e3);
        close(fd);
        unlink(path);
        free(lat);
    }
}

// ---- crash: kill -9 a writer that reports each durable id ---------------------

static uint32_t crash_payload(uint64_t id)
{
    return id % 3 ? 400 : 40000;
}

static void crash_child(int e, const char *dir, int fd)
{
    use_engine(e);
    size_t repaired;
    void *h = engines[e].open(dir, &repaired);
    uint64_t first = 0, last = 0, bad = 0;
    engines[e].replay(h, false, &first, &last, &bad); // where to go on from
    uint64_t id = last + 1;
    rec group[16];
    for (;;) {
        for (int i = 0; i < 16; i++)
            frame(&group[i], id + i, crash_payload(id + i));
        engines[e].append(h, group, 16);
        for (int i = 0; i < 16; i++)
            free(group[i].buf);
        id += 16;
        uint64_t durable = id - 1;
        if (write(fd, &durable, 8) != 8)
            _exit(1);
    }
}

static bool crash_test(int e, const char *dir, int rounds, unsigned seed)
{
    rm_rf(dir);
    mkdir(dir, 0755);
    uint64_t reported = 0, lost = 0, bad = 0, kept = 0;
    size_t repaired_bytes = 0, repairs = 0;
    srand(seed);
    for (int round = 0; round < rounds; round++) {
        int p[2];
        if (pipe(p))
            die("pipe", strerror(errno));
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            crash_child(e, dir, p[1]);
        }
        close(p[1]);
        struct timespec ts = {0, (50 + rand() % 350) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        uint64_t v;
        while (read(p[0], &v, 8) == 8)
            reported = v; // everything the child said was durable, to its last word
        close(p[0]);

        use_engine(e);
        size_t repaired;
        void *h = engines[e].open(dir, &repaired);
        uint64_t first = 0, last = 0, b = 0;
        uint64_t n = engines[e].replay(h, false, &first, &last, &b);
        engines[e].close(h);
        if (repaired) {
            repairs++;
            repaired_bytes += repaired;
        }
        bad += b;
        if (n && (first != 1 || last != first + n - 1))
            bad++; // a gap or a duplicate
        // Missing at the end, or fewer than reported (a gap: counted in bad too).
        uint64_t missing = last < reported ? reported - last : 0;
        if (n < reported && reported - n > missing)
            missing = reported - n;
        if (missing > lost) // the same loss shows again in later rounds: the worst round
            lost = missing;
        kept = n;
    }
    printf("crash  %-18s %2d x kill -9: %8" PRIu64 " records durable by report, %8" PRIu64
           " present and intact in order; lost %" PRIu64 ", bad %" PRIu64
           ", torn tails cut %zu (%zu B)  %s\n",
           engines[e].name, rounds, reported, kept, lost, bad, repairs, repaired_bytes,
           lost || bad ? "FAIL" : "ok");
    rm_rf(dir);
    return !lost && !bad;
}

// ---- main -----------------------------------------------------------------------

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage", "spool_compare DIR [--seconds S] [--repeat R] [--rounds N] [--quick]");
    const char *base = argv[1];
    double seconds = 0.6;
    int repeat = 2;
    int rounds = 10;
    bool quick = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else
            die("unknown argument", argv[i]);
    }
    pool = malloc(POOL_BYTES);
    for (size_t i = 0; i < POOL_BYTES; i++) // xorshift: incompressible, repeatable
        pool[i] = (unsigned char)(((i * 2654435761u) ^ (i >> 7) * 40503u) >> 11);
    mkdir(base, 0755);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/case", base);

    printf("# engines: %s, SQLite %s; segments %u MiB; ack chunk %d records; %.1f s per case, best of %d\n",
           MDB_VERSION_STRING, sqlite3_libversion(), SEGMENT_BYTES >> 20, ACK_CHUNK, seconds, repeat);
    fsync_floor(dir, seconds);
    rm_rf(dir);

    static const uint32_t sizes[] = {40000, 400};
    static const int windows[] = {1, 16, 128};
    static const int threads[] = {1, 4};
    printf("\n%-6s %4s %3s  %-18s %9s %8s %6s %8s %8s %9s %6s %6s\n", "record", "W", "thr", "engine",
           "appends/s", "MB/s", "xbare", "p50 ms", "p99 ms", "replay MB/s", "xbare", "disk/B");
    for (int s = 0; s < 2; s++)
        for (int w = 0; w < 3; w++)
            for (int t = 0; t < 2; t++) {
                if (quick && (t || w == 1))
                    continue;
                // Every engine in turn, --repeat times, keeping each one's
                // best: the machine is shared, and a disturbance then hits
                // one repeat of every engine rather than all of one.
                result best[N_ENGINES] = {{0}};
                for (int k = 0; k < repeat; k++)
                    for (int e = 0; e < N_ENGINES; e++) {
                        result r = run_case(e, dir, sizes[s], windows[w], threads[t], seconds);
                        double replay =
                            best[e].replay_mb_s > r.replay_mb_s ? best[e].replay_mb_s : r.replay_mb_s;
                        if (r.appends_s > best[e].appends_s)
                            best[e] = r; // its commit latencies with it
                        best[e].replay_mb_s = replay;
                    }
                result base_r = best[0];
                for (int e = 0; e < N_ENGINES; e++) {
                    result r = best[e];
                    printf("%5uB %4d %3d  %-18s %9.0f %8.1f %6.2f %8.3f %8.3f", sizes[s], windows[w],
                           threads[t], engines[e].name, r.appends_s, r.mb_s, r.appends_s / base_r.appends_s,
                           r.p50_ms, r.p99_ms);
                    if (e == N_ENGINES - 1)
                        printf("           -      -      -\n");
                    else
                        printf(" %11.1f %6.2f %6.2f\n", r.replay_mb_s, r.replay_mb_s / base_r.replay_mb_s,
                               r.space);
                    fflush(stdout);
                }
            }
    printf("\n");
    bool ok = true;
    for (int e = 0; e < N_ENGINES - 1; e++)
        ok &= crash_test(e, dir, rounds, 1234u + e);
    return ok ? 0 : 1;
}
