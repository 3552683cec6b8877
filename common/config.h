/*
 * One table per program drives its flags, its INGEST_* environment variables
 * and its --help. An entry with key "queue-capacity" is the flag
 * --queue-capacity and the variable INGEST_QUEUE_CAPACITY; flags win over the
 * environment, which wins over the default.
 *
 * librdkafka properties pass straight through: --kafka.<property>=<value>, or
 * INGEST_KAFKA__<PROPERTY> with dots written as underscores
 * (INGEST_KAFKA__SECURITY_PROTOCOL=SASL_SSL), so TLS and SASL need no code.
 */
#ifndef INGEST_CONFIG_H
#define INGEST_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum config_type {
    CONFIG_STRING,   /* char *, owned by the config */
    CONFIG_INT,      /* int64_t, within [min, max] */
    CONFIG_BYTES,    /* size_t; accepts 512, 64KiB, 8MiB, 1GiB */
    CONFIG_DURATION, /* int64_t milliseconds; accepts 250ms, 5s, 2m */
    CONFIG_BOOL,     /* int; true/false/1/0/yes/no/on/off */
} config_type;

typedef struct config_entry {
    const char *key; /* lower-case, dash-separated */
    config_type type;
    const char *def; /* default, as text; NULL for none */
    size_t offset;   /* of the value in the program's config struct */
    const char *help;
    int64_t min, max;           /* for INT, BYTES and DURATION; both 0: no bound */
    const char *const *choices; /* for STRING: NULL-terminated allowed values, or NULL */
} config_entry;

/* librdkafka properties collected from --kafka.* and INGEST_KAFKA__*. */
typedef struct config_props {
    char **keys;
    char **values;
    size_t n;
} config_props;

/* True when the operator set property `key` (e.g. a --kafka.* one). */
int config_props_has(const config_props *props, const char *key);
/* Set property `key` (a program's own default for it, where config_props_has says the operator did not). 0 or
 * -ENOMEM. */
int config_props_set(config_props *props, const char *key, const char *value);

typedef struct config_program {
    const char *name;    /* "gateway" */
    const char *summary; /* one line for --help */
    const config_entry *entries;
    size_t n_entries;
    size_t props_offset; /* of a config_props in the config struct */
} config_program;

/* The settings every program has, for its table. */
extern const char *const config_log_levels[];
extern const char *const config_log_formats[];
#define CONFIG_COMMON_ENTRIES(type)                                                                          \
    {"kafka-bootstrap",                                                                                      \
     CONFIG_STRING,                                                                                          \
     "127.0.0.1:9092",                                                                                       \
     offsetof(type, kafka_bootstrap),                                                                        \
     "Kafka bootstrap servers, host:port[,host:port...]",                                                    \
     0,                                                                                                      \
     0,                                                                                                      \
     NULL},                                                                                                  \
        {"log-level",                                                                                        \
         CONFIG_STRING,                                                                                      \
         "info",                                                                                             \
         offsetof(type, log_level),                                                                          \
         "Least severe log level written",                                                                   \
         0,                                                                                                  \
         0,                                                                                                  \
         config_log_levels},                                                                                 \
    {                                                                                                        \
        "log-format", CONFIG_STRING, "logfmt", offsetof(type, log_format), "Log line format", 0, 0,          \
            config_log_formats                                                                               \
    }

/*
 * Fill `cfg` from defaults, then the environment, then argv. Returns 0;
 * 1 when --help or --version was given (printed to `out`; the caller exits 0);
 * -EINVAL with a message naming the setting in err; -ENOMEM.
 * On any return, config_free() releases what was filled.
 */
int config_load(const config_program *prog, void *cfg, int argc, char **argv, char **envp, FILE *out,
                char *err, size_t errlen);

void config_usage(const config_program *prog, FILE *out);

void config_free(const config_program *prog, void *cfg);

/* Parse one value of a type, as config_load does. 0 or -EINVAL. */
int config_parse_bytes(const char *s, size_t *out);
int config_parse_duration_ms(const char *s, int64_t *out);
int config_parse_bool(const char *s, int *out);

#endif
