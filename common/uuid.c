#include "uuid.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/*
 * Per thread: the last millisecond used and a counter within it. A new
 * millisecond seeds the counter at random with its top bit clear, leaving
 * room for 2^41 ids before it spills into the next millisecond.
 */
static _Thread_local struct {
    uint64_t ms;
    uint64_t counter; /* 42 bits: 12 in rand_a, 30 at the top of rand_b */
    unsigned char pool[256];
    size_t used;
} uuid_state = {.used = sizeof(uuid_state.pool)};

static void random_bytes(unsigned char *out, size_t n)
{
    if (uuid_state.used + n > sizeof(uuid_state.pool)) {
        size_t got = 0;
        while (got < sizeof(uuid_state.pool)) {
            ssize_t r = getrandom(uuid_state.pool + got, sizeof(uuid_state.pool) - got, 0);
            if (r > 0)
                got += (size_t)r;
        }
        uuid_state.used = 0;
    }
    memcpy(out, uuid_state.pool + uuid_state.used, n);
    uuid_state.used += n;
}

void uuid_v7_bytes(unsigned char out[16])
{
    struct timespec ts;
    unsigned char rnd[9];
    uint64_t ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    random_bytes(rnd, sizeof(rnd));

    if (ms > uuid_state.ms) {
        uuid_state.ms = ms;
        uuid_state.counter = ((uint64_t)rnd[0] << 33 | (uint64_t)rnd[1] << 25 | (uint64_t)rnd[2] << 17 |
                              (uint64_t)rnd[3] << 9 | (uint64_t)rnd[4] << 1) &
                             ((1ULL << 41) - 1);
    } else if (++uuid_state.counter >= (1ULL << 42)) {
        /* Counter spent, or the clock went back: borrow the next millisecond. */
        uuid_state.ms++;
        uuid_state.counter = 0;
    }
    ms = uuid_state.ms;

    uint64_t c = uuid_state.counter;
    out[0] = (unsigned char)(ms >> 40);
    out[1] = (unsigned char)(ms >> 32);
    out[2] = (unsigned char)(ms >> 24);
    out[3] = (unsigned char)(ms >> 16);
    out[4] = (unsigned char)(ms >> 8);
    out[5] = (unsigned char)ms;
    out[6] = (unsigned char)(0x70 | ((c >> 38) & 0x0f)); /* version 7, counter bits 41..38 */
    out[7] = (unsigned char)(c >> 30);                   /* counter bits 37..30 */
    out[8] = (unsigned char)(0x80 | ((c >> 24) & 0x3f)); /* variant 10, counter bits 29..24 */
    out[9] = (unsigned char)(c >> 16);
    out[10] = (unsigned char)(c >> 8);
    out[11] = (unsigned char)c;
    memcpy(out + 12, rnd + 5, 4); /* 32 random bits */
}

void uuid_v7(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    char *p = out;

    uuid_v7_bytes(b);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 0x0f];
    }
    *p = '\0';
}
