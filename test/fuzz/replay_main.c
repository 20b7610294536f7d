/* test/fuzz/replay_main.c - runs a fuzz target over saved inputs, without
 * libFuzzer, so that gcc builds and `meson test` exercise every target.
 *
 * Usage: fuzz_X PATH...   Each PATH is a file, or a directory whose regular
 * files (not dot files, not subdirectories) are run in name order. Each input
 * gets a buffer of exactly its size, so a sanitizer sees any overread.
 * Exits 1 when a path cannot be read or no input was found at all: an empty
 * replay proves nothing and must not pass. */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as in libFuzzer: a target defines it only when it needs setup. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = NULL;
    uint8_t *data = NULL;
    struct stat st;
    size_t size;
    int result = -1;

    f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto out;
    }
    size = (size_t)st.st_size;
    /* malloc(0) may return NULL; libFuzzer never passes NULL. */
    data = malloc(size ? size : 1);
    if (data == NULL) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        goto out;
    }
    if (size > 0 && fread(data, 1, size, f) != size) {
        fprintf(stderr, "replay: %s: short read\n", path);
        goto out;
    }
    LLVMFuzzerTestOneInput(data, size);
    result = 0;
out:
    free(data);
    if (f != NULL)
        fclose(f);
    return result;
}

static int skip_entry(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Returns the number of inputs run, or -1. */
static long run_path(const char *path)
{
    struct dirent **names = NULL;
    struct stat st;
    long count = 0;
    int n = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) == 0 ? 1 : -1;

    n = scandir(path, &names, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char file[4096];

        if (count >= 0) {
            snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
            if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
                count = run_file(file) == 0 ? count + 1 : -1;
        }
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    long total = 0;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        long n = run_path(argv[i]);

        if (n < 0)
            return 1;
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    printf("replay: %ld inputs ok\n", total);
    return 0;
}
