/* replay_main.c: a main() for the fuzz targets in builds without libFuzzer (gcc, or clang without
 * SCADLES_FUZZ): runs LLVMFuzzerTestOneInput once over every file named on the command line, and
 * over every regular file of every directory named (sorted by name, dot files skipped; not
 * recursive). Each input is copied into an exactly sized heap buffer, as libFuzzer does, so ASan
 * sees reads past its end. Exits 0 after replaying at least one input; 1 when an argument cannot be
 * read or nothing was replayed (a missing or empty corpus is an error). A failing oracle aborts
 * inside the target. The ctest tests fuzz_replay_<target> run this over tests/fuzz/corpus/<target>. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            fprintf(stderr, "%s: out of memory\n", path);
            return -1;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        uint8_t *nb = realloc(buf, cap);
        if (!nb) free(buf);
        buf = nb;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        fprintf(stderr, "%s: read error\n", path);
        return -1;
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    if (n) memcpy(exact, buf, n);
    free(buf);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Replays every regular file of dir; returns how many, or -1 on an error. */
static int replay_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.') continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        size_t len = strlen(dir) + strlen(ent->d_name) + 2;
        names[count] = malloc(len);
        if (!names[count]) break;
        snprintf(names[count], len, "%s/%s", dir, ent->d_name);
        count++;
    }
    closedir(d);
    if (count) qsort(names, count, sizeof *names, cmp_names);
    int done = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        if (done >= 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) done = replay_file(names[i]) == 0 ? done + 1 : -1;
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    int total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        int n = S_ISDIR(st.st_mode) ? replay_dir(argv[i]) : (replay_file(argv[i]) == 0 ? 1 : -1);
        if (n < 0) return 1;
        total += n;
    }
    printf("%s: replayed %d input%s without a finding\n", argv[0], total, total == 1 ? "" : "s");
    return total > 0 ? 0 : 1;
}
