/*
 * sink/row and sink/batch: a Kafka record's value, any bytes, through
 * batch_add() as the consumer hands it over. Either a dead letter with its
 * reason, or exactly one line of COPY text: 16 fields, no raw newline or
 * carriage return, every backslash escape one COPY knows, and an
 * extensions field that is a JSON object once COPY's escapes are undone.
 * The first two bytes are the partition and offset's seeds.
 */
#include <string.h>

#include "batch.h"
#include "event.h"
#include "fuzz.h"
#include "json.h"
#include "log.h"

#define COLUMNS 17 /* sink/row.c's columns, principal last */

/* Undo COPY text's escapes (\\ \t \n \r, and \N as NULL: NULL returned). */
static char *copy_unescape(const char *f, size_t n, size_t *out_len)
{
    if (n == 2 && f[0] == '\\' && f[1] == 'N')
        return NULL;
    char *o = malloc(n + 1);
    size_t k = 0;

    FUZZ_CHECK(o != NULL, "no memory");
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '\\') {
            o[k++] = f[i];
            continue;
        }
        FUZZ_CHECK(i + 1 < n, "a lone backslash ends a field");
        switch (f[++i]) {
        case '\\': o[k++] = '\\'; break;
        case 't': o[k++] = '\t'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        default: FUZZ_CHECK(0, "unknown COPY escape \\%c", f[i]);
        }
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

static void check_line(const char *line, size_t len)
{
    const char *field[COLUMNS];
    size_t flen[COLUMNS], nf = 0, start = 0;

    FUZZ_CHECK(len > 0 && line[len - 1] == '\n', "a row without its newline");
    for (size_t i = 0; i < len - 1; i++) {
        FUZZ_CHECK(line[i] != '\n' && line[i] != '\r', "a raw line break inside a row");
        if (line[i] == '\t') {
            FUZZ_CHECK(nf < COLUMNS - 1, "more than %d fields", COLUMNS);
            field[nf] = line + start, flen[nf++] = i - start;
            start = i + 1;
        }
    }
    field[nf] = line + start, flen[nf++] = len - 1 - start;
    FUZZ_CHECK(nf == COLUMNS, "%zu fields, not %d", nf, COLUMNS);

    size_t n;
    for (size_t i = 0; i < COLUMNS; i++) {
        /* data_bytes is bytea hex: \\x, its backslash doubled for COPY, then pairs of hex digits. */
        if (i == 9 && !(flen[i] == 2 && memcmp(field[i], "\\N", 2) == 0)) {
            FUZZ_CHECK(flen[i] >= 3 && memcmp(field[i], "\\\\x", 3) == 0 && flen[i] % 2 == 1,
                       "data_bytes is not bytea hex");
            FUZZ_CHECK(strspn(field[i] + 3, "0123456789abcdef") >= flen[i] - 3, "data_bytes is not hex");
            continue;
        }
        char *v = copy_unescape(field[i], flen[i], &n);
        if (i == 7 && v != NULL && utf8_valid(v, n)) {
            /* extensions: jsonb. Invalid UTF-8 Postgres refuses anyway, making the record a dead letter. */
            ing_event_error err;
            FUZZ_CHECK(v[0] == '{' && json_check(v, n, NULL, &err) == 0, "extensions is not JSON: %s", v);
        }
        free(v);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* A dead letter is logged as a warning: one a run would be most of its time and output. */
    log_set_level(LOG_LEVEL_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch b;

    if (size < 2)
        return 0;
    batch_init(&b);
    /* The same record twice: the second row goes after the first in one COPY text. */
    for (int k = 0; k < 2; k++)
        FUZZ_CHECK(batch_add(&b, (int32_t)(int8_t)data[0], (int64_t)data[1] << 40, "key", 3, data + 2,
                             size - 2) == 0,
                   "no memory");
    for (size_t i = 0; i < b.n; i++) {
        const batch_rec *r = &b.rec[i];
        FUZZ_CHECK((r->dead != NULL) != (r->line_len > 0),
                   "record %zu is both or neither row and dead letter", i);
        if (r->dead)
            FUZZ_CHECK(r->dead[0] != '\0', "a dead letter without its reason");
        else
            check_line(b.copy + r->line_off, r->line_len);
    }
    FUZZ_CHECK(b.rows == 0 || b.rows == 2, "%zu rows", b.rows);
    batch_free(&b);
    return 0;
}
