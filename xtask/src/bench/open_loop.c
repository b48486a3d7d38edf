// open_loop PATH ITERATIONS
//
// Opens PATH read-only and closes it ITERATIONS times, and prints the mean cost of one
// open()+close() pair in nanoseconds on stdout. glibc implements open() with the openat
// syscall, which is what the agent traces. A short warm-up runs first.

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("open_loop: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void open_close(const char *path, unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "open_loop: open %s: %s\n", path, strerror(errno));
            exit(1);
        }
        close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH ITERATIONS\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    char *end = NULL;
    errno = 0;
    unsigned long long iterations = strtoull(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || iterations == 0) {
        fprintf(stderr, "open_loop: ITERATIONS must be a positive integer, got '%s'\n", argv[2]);
        return 2;
    }

    unsigned long long warmup = iterations / 100;
    if (warmup < 1000) warmup = 1000;
    if (warmup > 20000) warmup = 20000;
    open_close(path, warmup);

    uint64_t start = now_ns();
    open_close(path, iterations);
    uint64_t elapsed = now_ns() - start;

    printf("%.2f\n", (double)elapsed / (double)iterations);
    return 0;
}
