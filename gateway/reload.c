#include "reload.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "watch.h"

typedef struct reload_item {
    char *what;
    char *files[GW_RELOAD_MAX_FILES];
    gw_file_stamp stamps[GW_RELOAD_MAX_FILES]; /* as at the last load, failed or not */
    size_t n_files;
    gw_reload_load_fn load;
    gw_reload_swap_fn swap;
    void *arg;
} reload_item;

struct gw_reloader {
    gateway_metrics *m;
    pthread_mutex_t lock; /* one reload at a time: SIGHUP's (main thread) and the interval's */
    reload_item *items;
    size_t n;
    watch *w;
};

void gw_file_stamp_read(const char *path, gw_file_stamp *out)
{
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (stat(path, &st) != 0)
        return;
    out->present = 1;
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->mtim = st.st_mtim;
    out->size = st.st_size;
}

int gw_file_stamp_same(const gw_file_stamp *a, const gw_file_stamp *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec && a->size == b->size;
}

gw_reloader *gw_reloader_new(gateway_metrics *m)
{
    gw_reloader *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->m = m;
    return r;
}

int gw_reloader_add(gw_reloader *r, const char *what, const char *const *files, gw_reload_load_fn load,
                    gw_reload_swap_fn swap, void *arg)
{
    reload_item *items = realloc(r->items, (r->n + 1) * sizeof(*items)), *it;

    if (items == NULL)
        return -1;
    r->items = items;
    it = &items[r->n];
    memset(it, 0, sizeof(*it));
    if ((it->what = strdup(what)) == NULL)
        return -1;
    for (size_t i = 0; files[i]; i++) {
        if (files[i][0] == '\0')
            continue;
        if (it->n_files == GW_RELOAD_MAX_FILES || (it->files[it->n_files] = strdup(files[i])) == NULL)
            goto fail;
        gw_file_stamp_read(it->files[it->n_files], &it->stamps[it->n_files]);
        it->n_files++;
    }
    it->load = load;
    it->swap = swap;
    it->arg = arg;
    r->n++;
    return 0;

fail:
    for (size_t i = 0; i < it->n_files; i++)
        free(it->files[i]);
    free(it->what);
    return -1;
}

/*
 * The stamps are read before the load: a file that changes while it is
 * read shows as changed at the next check, and is read again then. They
 * are kept after a failed load too, so a broken file is reported once, not
 * every interval, and the next change to it is tried.
 */
static int reload_item_now(gw_reloader *r, reload_item *it, const gw_file_stamp *now)
{
    char err[512] = "";
    void *obj;

    memcpy(it->stamps, now, it->n_files * sizeof(*now));
    if ((obj = it->load(it->arg, err, sizeof(err))) == NULL) {
        atomic_fetch_add_explicit(&r->m->config_reloads[1], 1, memory_order_relaxed);
        LOG_WARN("reload", "reload of the %s failed (what was in force stays): %s", it->what, err);
        return 1;
    }
    it->swap(it->arg, obj);
    atomic_fetch_add_explicit(&r->m->config_reloads[0], 1, memory_order_relaxed);
    LOG_INFO("reload", "reloaded the %s from %s", it->what, it->files[0] ? it->files[0] : "(no file)");
    return 0;
}

static int reload(gw_reloader *r, int all)
{
    gw_file_stamp now[GW_RELOAD_MAX_FILES];
    int failed = 0;

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        reload_item *it = &r->items[i];
        int changed = all;
        for (size_t f = 0; f < it->n_files; f++) {
            gw_file_stamp_read(it->files[f], &now[f]);
            changed |= !gw_file_stamp_same(&now[f], &it->stamps[f]);
        }
        if (changed)
            failed += reload_item_now(r, it, now);
    }
    pthread_mutex_unlock(&r->lock);
    return failed;
}

int gw_reloader_reload_all(gw_reloader *r)
{
    return reload(r, 1);
}

int gw_reloader_check(gw_reloader *r)
{
    return reload(r, 0);
}

/* The watcher's thread (watch.h) serves as a ticker: the check reloads what changed and is never "not ready".
 */
static const char *tick(void *arg)
{
    gw_reloader_check(arg);
    return NULL;
}

int gw_reloader_start(gw_reloader *r, int64_t interval_ms, char *err, size_t errlen)
{
    if (interval_ms <= 0 || r->n == 0)
        return 0;
    r->w = watch_start("gw-reload", (int)interval_ms, 0, tick, r, err, errlen);
    return r->w ? 0 : -1;
}

void gw_reloader_free(gw_reloader *r)
{
    if (r == NULL)
        return;
    watch_stop(r->w);
    for (size_t i = 0; i < r->n; i++) {
        for (size_t f = 0; f < r->items[i].n_files; f++)
            free(r->items[i].files[f]);
        free(r->items[i].what);
    }
    free(r->items);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
