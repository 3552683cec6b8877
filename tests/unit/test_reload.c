#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "reload.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_reload.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text)
{
    char p[128];
    path(p, sizeof(p), name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Set a file's mtime, so two writes within the clock's granularity are told apart only by what the test says.
 */
static void set_mtime(const char *name, time_t sec)
{
    char p[128];
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    path(p, sizeof(p), name);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void stamp(const char *name, gw_file_stamp *s)
{
    char p[128];
    path(p, sizeof(p), name);
    gw_file_stamp_read(p, s);
}

static void test_stamp_sees_each_kind_of_change(void **state)
{
    gw_file_stamp a, b;
    char from[128], to[128];
    (void)state;

    write_file("f", "one");
    set_mtime("f", 1000000);
    stamp("f", &a);
    assert_true(a.present);
    stamp("f", &b);
    assert_true(gw_file_stamp_same(&a, &b));
    /* Rewritten in place, same size and mtime: unseen (SIGHUP is the way then). */
    write_file("f", "two");
    set_mtime("f", 1000000);
    stamp("f", &b);
    assert_true(gw_file_stamp_same(&a, &b));
    /* Size. */
    write_file("f", "three");
    set_mtime("f", 1000000);
    stamp("f", &b);
    assert_false(gw_file_stamp_same(&a, &b));
    /* mtime alone. */
    write_file("f", "one");
    set_mtime("f", 1000001);
    stamp("f", &b);
    assert_false(gw_file_stamp_same(&a, &b));
    /* A new file renamed over it: the inode, whatever the size and mtime. */
    set_mtime("f", 1000000);
    stamp("f", &a);
    write_file("g", "one");
    set_mtime("g", 1000000);
    path(from, sizeof(from), "g");
    path(to, sizeof(to), "f");
    assert_int_equal(rename(from, to), 0);
    stamp("f", &b);
    assert_false(gw_file_stamp_same(&a, &b));
    /* Gone. */
    assert_int_equal(unlink(to), 0);
    stamp("f", &b);
    assert_false(b.present);
    assert_false(gw_file_stamp_same(&a, &b));
}

/* The Kubernetes Secret volume: the path is a symlink into ..data, itself a symlink swapped to a new
 * directory. */
static void test_stamp_follows_symlinks(void **state)
{
    char p[128], q[128];
    gw_file_stamp a, b;
    (void)state;

    path(p, sizeof(p), "v1");
    assert_int_equal(mkdir(p, 0700), 0);
    path(p, sizeof(p), "v2");
    assert_int_equal(mkdir(p, 0700), 0);
    write_file("v1/tls.crt", "same");
    write_file("v2/tls.crt", "same");
    set_mtime("v1/tls.crt", 1000000);
    set_mtime("v2/tls.crt", 1000000);
    path(p, sizeof(p), "..data");
    assert_int_equal(symlink("v1", p), 0);
    path(p, sizeof(p), "tls.crt");
    assert_int_equal(symlink("..data/tls.crt", p), 0);
    stamp("tls.crt", &a);
    assert_true(a.present);
    path(p, sizeof(p), "..data_tmp");
    assert_int_equal(symlink("v2", p), 0);
    path(q, sizeof(q), "..data");
    assert_int_equal(rename(p, q), 0);
    stamp("tls.crt", &b);
    assert_true(b.present);
    assert_false(gw_file_stamp_same(&a, &b));
}

/* An item whose load fails while `fail` is set, and which counts its swaps. */
typedef struct fake {
    int fail, loads, swaps, in_force;
} fake;

static void *fake_load(void *arg, char *err, size_t errlen)
{
    fake *f = arg;
    f->loads++;
    if (f->fail) {
        snprintf(err, errlen, "broken on purpose");
        return NULL;
    }
    int *v = malloc(sizeof(*v));
    *v = f->loads;
    return v;
}

static void fake_swap(void *arg, void *obj)
{
    fake *f = arg;
    f->swaps++;
    f->in_force = *(int *)obj;
    free(obj);
}

static void test_reloader_reloads_what_changed_and_keeps_the_old_on_failure(void **state)
{
    gateway_metrics m;
    fake x = {0}, y = {0};
    char px[128], py[128];
    (void)state;

    memset(&m, 0, sizeof(m));
    write_file("x", "x");
    write_file("y", "y");
    path(px, sizeof(px), "x");
    path(py, sizeof(py), "y");
    gw_reloader *r = gw_reloader_new(&m);
    assert_non_null(r);
    const char *fx[] = {px, "", NULL}, *fy[] = {py, NULL};
    assert_int_equal(gw_reloader_add(r, "x", fx, fake_load, fake_swap, &x), 0);
    assert_int_equal(gw_reloader_add(r, "y", fy, fake_load, fake_swap, &y), 0);

    /* Nothing changed: nothing loaded. */
    assert_int_equal(gw_reloader_check(r), 0);
    assert_int_equal(x.loads + y.loads, 0);
    /* x changes: x alone. */
    write_file("x", "x2");
    assert_int_equal(gw_reloader_check(r), 0);
    assert_int_equal(x.swaps, 1);
    assert_int_equal(y.loads, 0);
    assert_int_equal(atomic_load(&m.config_reloads[0]), 1);
    /* x changes to something broken: loaded once, not swapped, counted once, not tried again unchanged. */
    x.fail = 1;
    write_file("x", "x33");
    assert_int_equal(gw_reloader_check(r), 1);
    assert_int_equal(gw_reloader_check(r), 0);
    assert_int_equal(x.loads, 2);
    assert_int_equal(x.swaps, 1);
    assert_int_equal(x.in_force, 1);
    assert_int_equal(atomic_load(&m.config_reloads[1]), 1);
    /* Fixed: the next change loads. */
    x.fail = 0;
    write_file("x", "x444");
    assert_int_equal(gw_reloader_check(r), 0);
    assert_int_equal(x.in_force, 3);
    /* SIGHUP: everything, changed or not. */
    assert_int_equal(gw_reloader_reload_all(r), 0);
    assert_int_equal(x.swaps, 3);
    assert_int_equal(y.swaps, 1);
    assert_int_equal(atomic_load(&m.config_reloads[0]), 4);
    assert_int_equal(atomic_load(&m.config_reloads[1]), 1);
    gw_reloader_free(r);
    gw_reloader_free(NULL);
}

static void test_reloader_thread_checks_every_interval(void **state)
{
    gateway_metrics m;
    fake x = {0};
    char px[128], err[128];
    struct timespec ms10 = {0, 10000000L};
    (void)state;

    memset(&m, 0, sizeof(m));
    write_file("t", "t");
    path(px, sizeof(px), "t");
    gw_reloader *r = gw_reloader_new(&m);
    const char *fx[] = {px, NULL};
    assert_int_equal(gw_reloader_add(r, "t", fx, fake_load, fake_swap, &x), 0);
    assert_int_equal(gw_reloader_start(r, 20, err, sizeof(err)), 0);
    write_file("t", "t2");
    for (int i = 0; i < 1000 && atomic_load(&m.config_reloads[0]) == 0; i++)
        nanosleep(&ms10, NULL);
    assert_int_equal(atomic_load(&m.config_reloads[0]), 1);
    gw_reloader_free(r);
    assert_int_equal(x.swaps, 1);
}

static void test_too_many_files(void **state)
{
    gateway_metrics m;
    fake x = {0};
    (void)state;

    memset(&m, 0, sizeof(m));
    gw_reloader *r = gw_reloader_new(&m);
    const char *f[] = {"a", "b", "c", "d", "e", NULL};
    assert_int_equal(gw_reloader_add(r, "x", f, fake_load, fake_swap, &x), -1);
    assert_int_equal(gw_reloader_reload_all(r), 0);
    assert_int_equal(x.loads, 0);
    gw_reloader_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stamp_sees_each_kind_of_change, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_stamp_follows_symlinks, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_reloader_reloads_what_changed_and_keeps_the_old_on_failure,
                                        make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_reloader_thread_checks_every_interval, make_dir, remove_dir),
        cmocka_unit_test(test_too_many_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
