/*
 * Reload without restart: file-backed settings (the TLS certificates, the
 * auth file) read again on SIGHUP, or when their files change, checked by
 * --reload-interval. Each is an item: the files it reads, a load step that
 * builds the new object from them (all of it checked) or fails with one
 * line of why, and a swap step that puts a loaded object in force and
 * cannot fail. So a reload is all or nothing per item: a failed load
 * changes nothing, the old object stays in force, the log says why (a
 * warning naming the item and the error) and
 * ingest_config_reloads_total{result="failed"} counts it.
 *
 * A change is a file's (st_dev, st_ino, st_mtim, st_size) from stat(),
 * which follows symlinks: a file written and renamed over the old one is a
 * new inode, and a Kubernetes Secret volume's update swaps its `..data`
 * symlink to a new directory, which changes what the path resolves to.
 *
 * Adding an item is one call before gw_reloader_start():
 *
 *   const char *files[] = {cfg.auth_file, NULL};
 *   gw_reloader_add(rl, "auth file", files, auth_load, auth_swap, &gw);
 */
#ifndef INGEST_GATEWAY_RELOAD_H
#define INGEST_GATEWAY_RELOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "metrics.h"

/* The new object from the files, or NULL with one line in err (naming the file at fault). */
typedef void *(*gw_reload_load_fn)(void *arg, char *err, size_t errlen);
/* Put what load returned in force (it owns it now) and free what it replaces. Cannot fail. */
typedef void (*gw_reload_swap_fn)(void *arg, void *obj);

/* What says a file changed. present 0: stat() failed (missing, unreadable directory). */
typedef struct gw_file_stamp {
    int present;
    dev_t dev;
    ino_t ino;
    struct timespec mtim;
    off_t size;
} gw_file_stamp;

void gw_file_stamp_read(const char *path, gw_file_stamp *out);
/* 1 when a and b tell the same file at the same state. */
int gw_file_stamp_same(const gw_file_stamp *a, const gw_file_stamp *b);

#define GW_RELOAD_MAX_FILES 4

typedef struct gw_reloader gw_reloader;

/* A reloader counting into m's config_reloads. NULL: out of memory. */
gw_reloader *gw_reloader_new(gateway_metrics *m);

/*
 * One more item: `what` names it in the log ("TLS certificates"); files,
 * NULL-terminated (at most GW_RELOAD_MAX_FILES, empty strings skipped), are
 * what a change is watched on; the strings are copied. Their state now is
 * the one in force (the item was loaded at start). 0, or -1: out of memory,
 * too many files. Before gw_reloader_start() only.
 */
int gw_reloader_add(gw_reloader *r, const char *what, const char *const *files, gw_reload_load_fn load,
                    gw_reload_swap_fn swap, void *arg);

/*
 * interval_ms > 0: a thread ("gw-reload") checks every item's files every
 * interval and reloads those that changed. 0: no thread (SIGHUP only).
 * 0, or -1 with why in err.
 */
int gw_reloader_start(gw_reloader *r, int64_t interval_ms, char *err, size_t errlen);

/* SIGHUP: reload every item now, changed or not. Returns how many failed. Any thread. */
int gw_reloader_reload_all(gw_reloader *r);

/* Reload the items whose files changed since their last load (failed or not). Returns how many failed. */
int gw_reloader_check(gw_reloader *r);

/* Stop the thread and free r. The items' objects are their owners' to free. NULL is a no-op. */
void gw_reloader_free(gw_reloader *r);

#endif
