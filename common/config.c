#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define KAFKA_FLAG_PREFIX "kafka."
#define KAFKA_ENV_PREFIX  "INGEST_KAFKA__"

#ifndef INGEST_VERSION
#define INGEST_VERSION "0.1.0"
#endif

const char *const config_log_levels[] = {"error", "warn", "info", "debug", NULL};
const char *const config_log_formats[] = {"logfmt", "json", NULL};

int config_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

/* A non-negative decimal integer followed by a unit from `units`. */
static int parse_scaled(const char *s, const char *const *units, const uint64_t *scale, size_t n_units,
                        uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -EINVAL;
    for (size_t i = 0; i < n_units; i++) {
        if (strcmp(end, units[i]) == 0) {
            if (scale[i] != 0 && v > UINT64_MAX / scale[i])
                return -EINVAL;
            *out = v * scale[i];
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_bytes(const char *s, size_t *out)
{
    static const char *const units[] = {"", "B", "KiB", "MiB", "GiB", "K", "M", "G"};
    static const uint64_t scale[] = {1,          1,          1ULL << 10, 1ULL << 20,
                                     1ULL << 30, 1ULL << 10, 1ULL << 20, 1ULL << 30};
    uint64_t v;

    if (parse_scaled(s, units, scale, 8, &v) != 0 || v > SIZE_MAX)
        return -EINVAL;
    *out = (size_t)v;
    return 0;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
    /* A bare number is milliseconds. */
    static const char *const units[] = {"", "ms", "s", "m", "h"};
    static const uint64_t scale[] = {1, 1, 1000, 60000, 3600000};
    uint64_t v;

    if (parse_scaled(s, units, scale, 5, &v) != 0 || v > INT64_MAX)
        return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (*s == '\0' || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

static const char *type_hint(const config_entry *e)
{
    switch (e->type) {
    case CONFIG_INT: return "N";
    case CONFIG_BYTES: return "BYTES";
    case CONFIG_DURATION: return "DURATION";
    case CONFIG_BOOL: return "BOOL";
    default: return "STRING";
    }
}

/* "queue-capacity" -> "INGEST_QUEUE_CAPACITY" */
static void env_name(const char *key, char *out, size_t size)
{
    size_t o = (size_t)snprintf(out, size, "INGEST_");

    for (; *key && o + 1 < size; key++)
        out[o++] = (*key == '-' || *key == '.') ? '_' : (char)toupper((unsigned char)*key);
    out[o] = '\0';
}

/* Store `value` in the entry's place; `origin` names where it came from for the message. */
static int set_value(const config_entry *e, void *cfg, const char *value, const char *origin, char *err,
                     size_t errlen)
{
    char *p = (char *)cfg + e->offset;
    int64_t i64 = 0;
    size_t sz;
    int b;

    switch (e->type) {
    case CONFIG_STRING:
        if (e->choices) {
            size_t k;
            for (k = 0; e->choices[k]; k++)
                if (strcmp(e->choices[k], value) == 0)
                    break;
            if (e->choices[k] == NULL) {
                size_t o = (size_t)snprintf(err, errlen, "%s: '%s' is not one of:", origin, value);
                for (k = 0; e->choices[k] && o < errlen; k++)
                    o += (size_t)snprintf(err + o, errlen - o, " %s", e->choices[k]);
                return -EINVAL;
            }
        }
        {
            char *s = strdup(value);
            if (s == NULL)
                return -ENOMEM;
            free(*(char **)p);
            *(char **)p = s;
        }
        return 0;
    case CONFIG_INT:
        if (parse_int(value, &i64) != 0)
            goto bad;
        break;
    case CONFIG_BYTES:
        if (config_parse_bytes(value, &sz) != 0)
            goto bad;
        i64 = sz > INT64_MAX ? INT64_MAX : (int64_t)sz;
        break;
    case CONFIG_DURATION:
        if (config_parse_duration_ms(value, &i64) != 0)
            goto bad;
        break;
    case CONFIG_BOOL:
        if (config_parse_bool(value, &b) != 0)
            goto bad;
        *(int *)p = b;
        return 0;
    }
    if ((e->min || e->max) && (i64 < e->min || i64 > e->max)) {
        snprintf(err, errlen, "%s: %s is out of range %" PRId64 "..%" PRId64, origin, value, e->min, e->max);
        return -EINVAL;
    }
    if (e->type == CONFIG_BYTES)
        *(size_t *)p = (size_t)i64;
    else
        *(int64_t *)p = i64;
    return 0;

bad:
    snprintf(err, errlen, "%s: '%s' is not a valid %s%s", origin, value, type_hint(e),
             e->type == CONFIG_BYTES      ? " (e.g. 1048576, 64KiB, 8MiB)"
             : e->type == CONFIG_DURATION ? " (e.g. 250ms, 5s, 2m)"
             : e->type == CONFIG_BOOL     ? " (true or false)"
                                          : "");
    return -EINVAL;
}

static int props_set(config_props *props, const char *key, size_t key_len, const char *value)
{
    char *k, *v;

    for (size_t i = 0; i < props->n; i++) {
        if (strlen(props->keys[i]) == key_len && memcmp(props->keys[i], key, key_len) == 0) {
            if ((v = strdup(value)) == NULL)
                return -ENOMEM;
            free(props->values[i]);
            props->values[i] = v;
            return 0;
        }
    }
    char **nk = realloc(props->keys, (props->n + 1) * sizeof(*nk));
    if (nk == NULL)
        return -ENOMEM;
    props->keys = nk;
    char **nv = realloc(props->values, (props->n + 1) * sizeof(*nv));
    if (nv == NULL)
        return -ENOMEM;
    props->values = nv;
    if ((k = strndup(key, key_len)) == NULL)
        return -ENOMEM;
    if ((v = strdup(value)) == NULL) {
        free(k);
        return -ENOMEM;
    }
    props->keys[props->n] = k;
    props->values[props->n] = v;
    props->n++;
    return 0;
}

int config_props_set(config_props *props, const char *key, const char *value)
{
    return props_set(props, key, strlen(key), value);
}

static const config_entry *find_entry(const config_program *prog, const char *key, size_t len)
{
    for (size_t i = 0; i < prog->n_entries; i++)
        if (strlen(prog->entries[i].key) == len && memcmp(prog->entries[i].key, key, len) == 0)
            return &prog->entries[i];
    return NULL;
}

void config_usage(const config_program *prog, FILE *out)
{
    char env[96];

    fprintf(out, "Usage: %s [--setting=value ...]\n%s\n\n", prog->name, prog->summary);
    fprintf(out, "Every setting is also read from its environment variable; a flag wins.\n\n");
    for (size_t i = 0; i < prog->n_entries; i++) {
        const config_entry *e = &prog->entries[i];
        env_name(e->key, env, sizeof(env));
        fprintf(out, "  --%s=%s\n      %s\n      env %s, default %s\n", e->key, type_hint(e), e->help, env,
                e->def ? e->def : "(none)");
        if (e->choices) {
            fprintf(out, "      one of:");
            for (size_t k = 0; e->choices[k]; k++)
                fprintf(out, " %s", e->choices[k]);
            fputc('\n', out);
        }
    }
    if (prog->props_offset != (size_t)-1)
        fprintf(
            out,
            "  --kafka.<property>=VALUE\n      Any librdkafka property (TLS, SASL, tuning), passed as is.\n"
            "      env %s<PROPERTY>, dots written as underscores\n",
            KAFKA_ENV_PREFIX);
    fprintf(out, "  --help, --version\n");
}

int config_load(const config_program *prog, void *cfg, int argc, char **argv, char **envp, FILE *out,
                char *err, size_t errlen)
{
    config_props *props =
        prog->props_offset == (size_t)-1 ? NULL : (config_props *)((char *)cfg + prog->props_offset);
    char origin[160], env[96];
    int rc;

    err[0] = '\0';
    for (size_t i = 0; i < prog->n_entries; i++) {
        const config_entry *e = &prog->entries[i];
        if (e->def == NULL)
            continue;
        snprintf(origin, sizeof(origin), "default of --%s", e->key);
        if ((rc = set_value(e, cfg, e->def, origin, err, errlen)) != 0)
            return rc;
    }

    for (char **ep = envp; ep && *ep; ep++) {
        const char *eq = strchr(*ep, '=');
        if (eq == NULL || strncmp(*ep, "INGEST_", 7) != 0)
            continue;
        if (props && strncmp(*ep, KAFKA_ENV_PREFIX, strlen(KAFKA_ENV_PREFIX)) == 0) {
            const char *name = *ep + strlen(KAFKA_ENV_PREFIX);
            size_t len = (size_t)(eq - name);
            char key[128];
            if (len == 0 || len >= sizeof(key)) {
                snprintf(err, errlen, "%.*s: not a librdkafka property name", (int)(eq - *ep), *ep);
                return -EINVAL;
            }
            for (size_t k = 0; k < len; k++)
                key[k] = name[k] == '_' ? '.' : (char)tolower((unsigned char)name[k]);
            if ((rc = props_set(props, key, len, eq + 1)) != 0)
                return rc;
            continue;
        }
        /* Variables of other programs or of the local set-up (INGEST_PG_DSN for the gateway) are ignored. */
        for (size_t i = 0; i < prog->n_entries; i++) {
            env_name(prog->entries[i].key, env, sizeof(env));
            if (strlen(env) == (size_t)(eq - *ep) && memcmp(env, *ep, (size_t)(eq - *ep)) == 0) {
                snprintf(origin, sizeof(origin), "%s", env);
                if ((rc = set_value(&prog->entries[i], cfg, eq + 1, origin, err, errlen)) != 0)
                    return rc;
            }
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            config_usage(prog, out);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            fprintf(out, "%s %s\n", prog->name, INGEST_VERSION);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (settings are --name=value; see --help)", arg);
            return -EINVAL;
        }
        const char *key = arg + 2, *eq = strchr(key, '=');
        size_t key_len = eq ? (size_t)(eq - key) : strlen(key);
        if (props && strncmp(key, KAFKA_FLAG_PREFIX, strlen(KAFKA_FLAG_PREFIX)) == 0) {
            if (eq == NULL && i + 1 >= argc) {
                snprintf(err, errlen, "--%s: needs a value", key);
                return -EINVAL;
            }
            value = eq ? eq + 1 : argv[++i];
            if ((rc = props_set(props, key + strlen(KAFKA_FLAG_PREFIX), key_len - strlen(KAFKA_FLAG_PREFIX),
                                value)) != 0)
                return rc;
            continue;
        }
        const config_entry *e = find_entry(prog, key, key_len);
        if (e == NULL) {
            snprintf(err, errlen, "unknown setting '--%.*s' (see --help)", (int)key_len, key);
            return -EINVAL;
        }
        if (eq) {
            value = eq + 1;
        } else if (e->type == CONFIG_BOOL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, errlen, "--%s: needs a value", e->key);
            return -EINVAL;
        }
        snprintf(origin, sizeof(origin), "--%s", e->key);
        if ((rc = set_value(e, cfg, value, origin, err, errlen)) != 0)
            return rc;
    }
    return 0;
}

void config_free(const config_program *prog, void *cfg)
{
    for (size_t i = 0; i < prog->n_entries; i++) {
        if (prog->entries[i].type == CONFIG_STRING) {
            char **p = (char **)((char *)cfg + prog->entries[i].offset);
            free(*p);
            *p = NULL;
        }
    }
    if (prog->props_offset != (size_t)-1) {
        config_props *props = (config_props *)((char *)cfg + prog->props_offset);
        for (size_t i = 0; i < props->n; i++) {
            free(props->keys[i]);
            free(props->values[i]);
        }
        free(props->keys);
        free(props->values);
        memset(props, 0, sizeof(*props));
    }
}

int config_props_has(const config_props *props, const char *key)
{
    for (size_t i = 0; props && i < props->n; i++)
        if (strcmp(props->keys[i], key) == 0)
            return 1;
    return 0;
}
