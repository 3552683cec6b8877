/*
 * The JSON library benchmark: runs one worker per candidate (bench_json_jsonc,
 * bench_json_jansson, bench_json_cjson, and bench_json_api for the gateway's
 * own json_parse_events), found next to this program, and prints throughput,
 * the strictness catalogue side by side, and a recommendation.
 *
 *   bench_json [--quick]    --quick: one timed run per corpus instead of five
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_WORKERS 4
#define MAX_CASES   128
#define MAX_CORPORA 8

static const char *const workers[MAX_WORKERS] = {"bench_json_jsonc", "bench_json_jansson", "bench_json_cjson",
                                                 "bench_json_api"};

typedef struct result {
    char name[64];
    char config[256];
    int is_library; /* the api worker is our own code, not a candidate */
    int ran;
    size_t n_cases;
    char verdict[MAX_CASES][16];
    int good[MAX_CASES];
    char detail[MAX_CASES][96];
    size_t n_perf;
    double mbps[MAX_CORPORA], evps[MAX_CORPORA];
    int perf_ok[MAX_CORPORA];
    long mem_kb[MAX_CORPORA];
    /* Tallies. */
    int right, lets_through, damages, crashes;
} result;

static char case_name[MAX_CASES][64];
static char case_want[MAX_CASES][16];
static size_t n_case_names;
static char corpus_name[MAX_CORPORA][32];
static size_t corpus_bytes[MAX_CORPORA];
static size_t n_corpora;
static char mem_name[MAX_CORPORA][32];
static size_t mem_bytes[MAX_CORPORA];
static size_t n_mem;

/* Split a line on tabs in place; returns the number of fields. */
static int split(char *line, char **f, int max)
{
    int n = 0;

    line[strcspn(line, "\n")] = '\0';
    while (n < max) {
        f[n++] = line;
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            break;
        *tab = '\0';
        line = tab + 1;
    }
    return n;
}

static void run_worker(const char *dir, const char *prog, const char *args, result *r)
{
    char cmd[PATH_MAX + 64], line[4096];
    char *f[8];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "%s/%s", dir, prog);
    if (access(cmd, X_OK) != 0)
        return;
    snprintf(cmd, sizeof(cmd), "'%s/%s' %s", dir, prog, args);
    fprintf(stderr, "running %s ...\n", prog);
    if ((p = popen(cmd, "r")) == NULL)
        return;
    r->ran = 1;
    r->is_library = strcmp(prog, "bench_json_api") != 0;
    while (fgets(line, sizeof(line), p) != NULL) {
        int n = split(line, f, 8);
        if (n >= 3 && strcmp(f[0], "lib") == 0) {
            snprintf(r->name, sizeof(r->name), "%s", f[1]);
            snprintf(r->config, sizeof(r->config), "%s", f[2]);
        } else if (n >= 5 && strcmp(f[0], "case") == 0 && r->n_cases < MAX_CASES) {
            size_t i = r->n_cases++;
            if (i >= n_case_names) {
                snprintf(case_name[i], sizeof(case_name[i]), "%s", f[1]);
                snprintf(case_want[i], sizeof(case_want[i]), "%s", f[4]);
                n_case_names = i + 1;
            }
            snprintf(r->verdict[i], sizeof(r->verdict[i]), "%s", f[2]);
            r->good[i] = atoi(f[3]);
            snprintf(r->detail[i], sizeof(r->detail[i]), "%s", n >= 6 ? f[5] : "");
            if (strcmp(f[2], "CRASHES") == 0)
                r->crashes++;
            else if (r->good[i])
                r->right++;
            else if (strcmp(f[4], "keep") == 0)
                r->damages++; /* valid JSON refused or altered */
            else
                r->lets_through++;
        } else if (n >= 4 && strcmp(f[0], "mem") == 0) {
            size_t i;
            for (i = 0; i < n_mem && strcmp(mem_name[i], f[1]) != 0; i++)
                ;
            if (i == n_mem && n_mem < MAX_CORPORA) {
                snprintf(mem_name[i], sizeof(mem_name[i]), "%s", f[1]);
                mem_bytes[i] = strtoul(f[2], NULL, 10);
                n_mem++;
            }
            if (i < MAX_CORPORA)
                r->mem_kb[i] = strtol(f[3], NULL, 10);
        } else if (n >= 5 && strcmp(f[0], "perf") == 0 && r->n_perf < MAX_CORPORA) {
            size_t i = r->n_perf++;
            if (i >= n_corpora) {
                snprintf(corpus_name[i], sizeof(corpus_name[i]), "%s", f[1]);
                corpus_bytes[i] = strtoul(f[2], NULL, 10);
                n_corpora = i + 1;
            }
            double secs = strcmp(f[4], "FAILED") == 0 ? 0 : strtod(f[4], NULL);
            r->perf_ok[i] = secs > 0;
            if (secs > 0) {
                r->mbps[i] = (double)corpus_bytes[i] / secs / 1e6;
                r->evps[i] = strtod(f[3], NULL) / secs;
            }
        }
    }
    pclose(p);
}

static void human(char *out, size_t size, double v)
{
    if (v >= 1e6)
        snprintf(out, size, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(out, size, "%.1fk", v / 1e3);
    else
        snprintf(out, size, "%.0f", v);
}

int main(int argc, char **argv)
{
    static result res[MAX_WORKERS];
    char self[PATH_MAX], *slash;
    const char *args = (argc > 1 && strcmp(argv[1], "--quick") == 0) ? "--quick" : "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int n_run = 0;

    if (n <= 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    self[n] = '\0';
    if ((slash = strrchr(self, '/')) != NULL)
        *slash = '\0';
    for (int w = 0; w < MAX_WORKERS; w++) {
        run_worker(self, workers[w], args, &res[w]);
        n_run += res[w].ran;
    }
    if (n_run == 0) {
        fprintf(stderr, "no bench_json_* workers next to %s\n", self);
        return 1;
    }

    printf("\n== Configurations\n");
    for (int w = 0; w < MAX_WORKERS; w++)
        if (res[w].ran)
            printf("  %-20s %s\n", res[w].name, res[w].config);

    printf("\n== Throughput: parse, walk every member, copy attributes, re-serialize data "
           "(best of %s; MB/s of input, events/s)\n",
           args[0] ? "1 run" : "5 runs");
    printf("  %-16s %8s", "corpus", "bytes");
    for (int w = 0; w < MAX_WORKERS; w++)
        if (res[w].ran)
            printf("  %-24s", res[w].name);
    printf("\n");
    for (size_t i = 0; i < n_corpora; i++) {
        printf("  %-16s %8zu", corpus_name[i], corpus_bytes[i]);
        for (int w = 0; w < MAX_WORKERS; w++) {
            char ev[32], cell[64];
            if (!res[w].ran)
                continue;
            if (i >= res[w].n_perf || !res[w].perf_ok[i]) {
                printf("  %-24s", "FAILED");
                continue;
            }
            human(ev, sizeof(ev), res[w].evps[i]);
            snprintf(cell, sizeof(cell), "%7.1f MB/s %8s ev/s", res[w].mbps[i], ev);
            printf("  %-24s", cell);
        }
        printf("\n");
    }

    if (n_mem > 0) {
        printf("\n== Peak memory of one parse (MB, and times the input)\n");
        printf("  %-25s", "input");
        for (int w = 0; w < MAX_WORKERS; w++)
            if (res[w].ran && res[w].is_library)
                printf("  %-24s", res[w].name);
        printf("\n");
        for (size_t i = 0; i < n_mem; i++) {
            printf("  %-25s", mem_name[i]);
            for (int w = 0; w < MAX_WORKERS; w++) {
                char cell[64];
                if (!res[w].ran || !res[w].is_library)
                    continue;
                snprintf(cell, sizeof(cell), "%6.1f MB %5.0fx", (double)res[w].mem_kb[i] / 1024,
                         (double)res[w].mem_kb[i] * 1024 / (double)mem_bytes[i]);
                printf("  %-24s", cell);
            }
            printf("\n");
        }
    }

    printf("\n== Strictness catalogue\n"
           "  keeps/rejects: right. ACCEPTS: takes what it must refuse. CHANGES: alters a value.\n"
           "  REJECTS: refuses valid JSON. CRASHES: died. want: what the gateway needs.\n");
    printf("  %-32s %-15s", "case", "want");
    for (int w = 0; w < MAX_WORKERS; w++)
        if (res[w].ran)
            printf(" %-18.18s", res[w].name);
    printf("\n");
    for (size_t i = 0; i < n_case_names; i++) {
        printf("  %-32s %-15s", case_name[i], case_want[i]);
        for (int w = 0; w < MAX_WORKERS; w++)
            if (res[w].ran)
                printf(" %-18s", i < res[w].n_cases ? res[w].verdict[i] : "-");
        printf("\n");
    }

    printf("\n== What the wrong answers were\n");
    for (int w = 0; w < MAX_WORKERS; w++) {
        if (!res[w].ran)
            continue;
        for (size_t i = 0; i < res[w].n_cases; i++)
            if (!res[w].good[i] && res[w].detail[i][0] != '\0')
                printf("  %-20s %-32s %s %s\n", res[w].name, case_name[i], res[w].verdict[i],
                       res[w].detail[i]);
    }

    printf("\n== Summary (%zu cases)\n", n_case_names);
    printf("  %-20s %6s %20s %34s %8s\n", "", "right", "damages valid JSON",
           "wrong, but a check in front fixes", "crashes");
    for (int w = 0; w < MAX_WORKERS; w++)
        if (res[w].ran)
            printf("  %-20s %6d %20d %34d %8d\n", res[w].name, res[w].right, res[w].damages,
                   res[w].lets_through, res[w].crashes);

    /*
     * A library that refuses or alters valid JSON cannot be fixed from
     * outside: the value is gone by the time we see it. One that lets bad
     * input through can be: a validator of our own in front. So rank by the
     * first (and crashes), then by batch throughput.
     */
    int best = -1;
    size_t batch = 0;
    for (size_t i = 0; i < n_corpora; i++)
        if (strcmp(corpus_name[i], "batch-1000") == 0)
            batch = i;
    for (int w = 0; w < MAX_WORKERS; w++) {
        const result *r = &res[w];
        if (!r->ran || !r->is_library)
            continue;
        if (best < 0)
            best = w;
        else {
            const result *b = &res[best];
            int rk = r->crashes * 1000 + r->damages, bk = b->crashes * 1000 + b->damages;
            if (rk < bk || (rk == bk && r->mbps[batch] > b->mbps[batch]))
                best = w;
        }
    }
    if (best >= 0) {
        const result *b = &res[best];
        printf("\n== Recommendation: %s\n", b->name);
        printf("  It damages %d valid input(s) and crashes on %d; ", b->damages, b->crashes);
        printf("batch throughput %.1f MB/s", b->mbps[batch]);
        for (int w = 0; w < MAX_WORKERS; w++)
            if (w != best && res[w].ran && res[w].is_library)
                printf("; %s: %d damaged, %.1f MB/s", res[w].name, res[w].damages, res[w].mbps[batch]);
        printf(".\n");
        if (b->lets_through > 0)
            printf(
                "  It gets %d case(s) wrong that a strict validator of our own in front of it can refuse.\n",
                b->lets_through);
        for (int w = 0; w < MAX_WORKERS; w++)
            if (res[w].ran && !res[w].is_library)
                printf("  With that validator (%s): %d damaged, %d wrong, %d crashes; batch %.1f MB/s.\n"
                       "  (It gets each input as an event's data. A name twice inside data keeps the last\n"
                       "  value, as jsonb does; twice at the event's top level it is refused.)\n",
                       res[w].name, res[w].damages, res[w].lets_through, res[w].crashes, res[w].mbps[batch]);
    }
    return 0;
}
