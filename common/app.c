#include "app.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

extern char **environ;

int app_config_load(const config_program *prog, void *cfg, int argc, char **argv, char *const *level_name,
                    char *const *format_name)
{
    char err[512];
    int rc = config_load(prog, cfg, argc, argv, environ, stdout, err, sizeof(err));

    if (rc == 1)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", prog->name, rc == -EINVAL ? err : "out of memory");
        return 2;
    }
    /* Both were checked against their choices by config_load. */
    log_set_level((log_level)log_level_parse(*level_name));
    log_set_format(strcmp(*format_name, "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT);
    return -1;
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void app_block_signals(void)
{
    sigset_t set;

    stop_signals(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int app_wait_signal(void)
{
    sigset_t set;
    int sig = 0;

    stop_signals(&set);
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}

int app_wait_signal_or_hup(void)
{
    sigset_t set;
    int sig = 0;

    stop_signals(&set);
    sigaddset(&set, SIGHUP);
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}

unsigned long app_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            LOG_WARN("app", "cannot raise the descriptor limit from %llu to %llu: %s",
                     (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = was;
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? (unsigned long)-1 : (unsigned long)rl.rlim_cur;
}

void app_hostname(char *buf, size_t size)
{
    if (gethostname(buf, size) != 0 || buf[0] == '\0')
        snprintf(buf, size, "unknown");
    buf[size - 1] = '\0';
}
