#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

log_level log_current_level = LOG_LEVEL_INFO;
static log_format current_format = LOG_FORMAT_LOGFMT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level level)
{
    log_current_level = level;
}

void log_set_format(log_format format)
{
    current_format = format;
}

int log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    if (strcmp(name, "warning") == 0)
        return LOG_LEVEL_WARN;
    return -1;
}

/* Quote `s` into out for a logfmt value or a JSON string: escape \ " and controls. */
static size_t quote(char *out, size_t size, const char *s)
{
    size_t o = 0;

    for (; *s && o + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

void log_write(log_level level, const char *comp, const char *fmt, ...)
{
    char msg[1024], qmsg[2200], line[2400], ts[40];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    quote(qmsg, sizeof(qmsg), msg);

    if (current_format == LOG_FORMAT_JSON)
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"comp\":\"%s\",\"msg\":\"%s\"}\n", ts,
                     (int)(tv.tv_usec / 1000), level_names[level], comp, qmsg);
    else
        n = snprintf(line, sizeof(line), "ts=%s.%03dZ level=%s comp=%s msg=\"%s\"\n", ts,
                     (int)(tv.tv_usec / 1000), level_names[level], comp, qmsg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1;
    /* One write(2) per line: lines from several threads never interleave. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
