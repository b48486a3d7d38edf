// pipeline_gen DIR FILES RATE SECONDS PORT CONNECT_EVERY
//
// Load generator of `cargo xtask bench pipeline`: opens the credential files DIR/.env.0 ..
// DIR/.env.<FILES-1> round robin, RATE opens per second for SECONDS seconds, and every
// CONNECT_EVERY-th open also connects to 127.0.0.1:PORT and closes the connection (0: never).
// Each open the agent traces becomes one access event. Paced in 1 ms steps; prints the opens
// done and the rate reached on stdout.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("pipeline_gen: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void connect_once(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("pipeline_gen: socket");
        exit(1);
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // A refused or slow connect still counts as traced; the generator does not wait on it.
    (void)connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: pipeline_gen DIR FILES RATE SECONDS PORT CONNECT_EVERY\n");
        return 2;
    }
    const char *dir = argv[1];
    unsigned long files = strtoul(argv[2], NULL, 10);
    double rate = strtod(argv[3], NULL);
    double seconds = strtod(argv[4], NULL);
    uint16_t port = (uint16_t)strtoul(argv[5], NULL, 10);
    unsigned long connect_every = strtoul(argv[6], NULL, 10);
    if (files == 0 || rate <= 0 || seconds <= 0) {
        fprintf(stderr, "pipeline_gen: FILES, RATE and SECONDS must be positive\n");
        return 2;
    }
    char path[4096];
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    unsigned long long done = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end) {
            break;
        }
        unsigned long long due = (unsigned long long)((double)(now - start) * rate / 1e9);
        if (done >= due) {
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
            continue;
        }
        while (done < due) {
            snprintf(path, sizeof(path), "%s/.env.%llu", dir, done % files);
            int fd = open(path, O_RDONLY);
            if (fd < 0) {
                fprintf(stderr, "pipeline_gen: open %s: %s\n", path, strerror(errno));
                return 1;
            }
            close(fd);
            done++;
            if (connect_every && done % connect_every == 0) {
                connect_once(port);
            }
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("%llu %.1f\n", done, (double)done / elapsed);
    return 0;
}
