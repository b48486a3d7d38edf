// getenv_loop NAME ITERATIONS
//
// Calls getenv(NAME) ITERATIONS times and prints the mean cost of one call in nanoseconds on
// stdout. NAME must be set in the environment (so every call finds it). The result goes to a
// volatile sink so the calls are not optimised away. A short warm-up runs first.

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *volatile sink;

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("getenv_loop: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lookups(const char *name, unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++) {
        sink = getenv(name);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME ITERATIONS\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    char *end = NULL;
    errno = 0;
    unsigned long long iterations = strtoull(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || iterations == 0) {
        fprintf(stderr, "getenv_loop: ITERATIONS must be a positive integer, got '%s'\n",
                argv[2]);
        return 2;
    }
    if (getenv(name) == NULL) {
        fprintf(stderr, "getenv_loop: %s is not set in the environment\n", name);
        return 2;
    }

    // Keep in sync with `calls_per_run` in xtask/src/bench/getenv.rs.
    unsigned long long warmup = iterations / 100;
    if (warmup < 1000) warmup = 1000;
    if (warmup > 20000) warmup = 20000;
    lookups(name, warmup);

    uint64_t start = now_ns();
    lookups(name, iterations);
    uint64_t elapsed = now_ns() - start;

    printf("%.2f\n", (double)elapsed / (double)iterations);
    return 0;
}
