/*
 * One line per notable thing, to stderr, as logfmt or JSON:
 *   ts=2026-11-26T10:00:00.123Z level=info comp=http msg="listening" ...
 * The macros test the level before evaluating their arguments, so a debug
 * line on a hot path costs one load and a branch when debug is off.
 */
#ifndef INGEST_LOG_H
#define INGEST_LOG_H

typedef enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
} log_level;

typedef enum log_format {
    LOG_FORMAT_LOGFMT = 0,
    LOG_FORMAT_JSON,
} log_format;

extern log_level log_current_level;

void log_set_level(log_level level);
void log_set_format(log_format format);

/* "error", "warn", "info", "debug" -> level; -1 when unknown. */
int log_level_parse(const char *name);

/* Write one line; `comp` names the component ("http", "kafka", "sink"). */
void log_write(log_level level, const char *comp, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define LOG_AT(level, comp, ...)                                                                             \
    do {                                                                                                     \
        if ((level) <= log_current_level)                                                                    \
            log_write((level), (comp), __VA_ARGS__);                                                         \
    } while (0)

#define LOG_ERROR(comp, ...) LOG_AT(LOG_LEVEL_ERROR, comp, __VA_ARGS__)
#define LOG_WARN(comp, ...)  LOG_AT(LOG_LEVEL_WARN, comp, __VA_ARGS__)
#define LOG_INFO(comp, ...)  LOG_AT(LOG_LEVEL_INFO, comp, __VA_ARGS__)
#define LOG_DEBUG(comp, ...) LOG_AT(LOG_LEVEL_DEBUG, comp, __VA_ARGS__)

#endif
