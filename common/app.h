/* What both programs do the same way at start and stop. */
#ifndef INGEST_APP_H
#define INGEST_APP_H

#include "config.h"

/*
 * Load the settings (defaults, INGEST_* variables, flags) and apply the log
 * level and format from the given settings. Returns -1 to go on, or the exit
 * status to leave with: 0 after --help/--version, 2 for a bad setting (the
 * message, naming the setting, is on stderr).
 */
int app_config_load(const config_program *prog, void *cfg, int argc, char **argv, char *const *level_name,
                    char *const *format_name);

/*
 * Block SIGTERM, SIGINT, SIGHUP and SIGPIPE in this thread and every thread
 * it starts later, so a stop (or a reload) is seen once, by
 * app_wait_signal(), and never interrupts a worker. Call before starting
 * threads. A program that does not wait for SIGHUP ignores it.
 */
void app_block_signals(void);

/* Wait for SIGTERM or SIGINT; returns the signal number. */
int app_wait_signal(void);

/* Wait for SIGTERM, SIGINT or SIGHUP (the gateway's reload); returns the signal number. */
int app_wait_signal_or_hup(void);

/*
 * Raise the soft limit on open descriptors to the hard one (a container's
 * default soft limit is often 1024, its hard one far higher), so that
 * connection caps, not the kernel, say when to refuse. Returns the soft
 * limit now in force (0 when it cannot be read).
 */
unsigned long app_raise_nofile(void);

/* This host's name into buf, "unknown" when it has none. */
void app_hostname(char *buf, size_t size);

#endif
