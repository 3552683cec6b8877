/*
 * The monotonic clock, for every deadline and timed wait in both programs:
 * the wall clock can be stepped (NTP, an operator), and a wait measured on
 * it would then end early or hang.
 */
#ifndef INGEST_MONO_H
#define INGEST_MONO_H

#include <pthread.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC. */
long long mono_ms(void);

/* The CLOCK_MONOTONIC time `ms` from now, for pthread_cond_timedwait() on a mono_cond_init() condition. */
struct timespec mono_deadline(long long ms);

/* A condition variable whose timed waits run on CLOCK_MONOTONIC. 0 or an errno value. */
int mono_cond_init(pthread_cond_t *cond);

#endif
