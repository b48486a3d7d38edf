// storm_loop server N
// storm_loop client RATE SECONDS HELLO_DIR PORT...
//
// The two sides of `cargo xtask bench storm`, a connection storm over loopback.
//
// server: listens on N ephemeral TCP ports of 127.0.0.1, prints them on one line on stdout,
// then accepts every connection on any of them and closes it at once, until killed. One
// thread, epoll, non-blocking accept4 until EAGAIN.
//
// client: connects to 127.0.0.1:PORT (the ports in turn, round robin), sends that
// destination's first payload (HELLO_DIR/hello-<i>.bin for the i-th port: a TLS ClientHello),
// closes; RATE connections per second for SECONDS seconds. Paced in batches of 1 ms: before
// batch k it sleeps (clock_nanosleep to the absolute deadline start + k ms) and then makes the
// connections due by the end of that millisecond; a client that falls behind makes them
// without sleeping, so the rate it reaches is what it could do. Prints, on stdout, the
// connections made, the nanoseconds elapsed and the connects that failed.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH_NS 1000000ull
#define MAX_DESTINATIONS 64
#define MAX_PAYLOAD 16384
#define BACKLOG 4096

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("storm_loop: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "storm_loop: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long parse_count(const char *s, const char *what) {
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v == 0) {
        fprintf(stderr, "storm_loop: %s must be a positive integer, got '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static int server(unsigned long n) {
    if (n > MAX_DESTINATIONS) {
        fprintf(stderr, "storm_loop: at most %d listeners\n", MAX_DESTINATIONS);
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) fail("epoll_create1");
    for (unsigned long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) fail("socket (listener)");
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof(addr));
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) fail("bind");
        if (listen(fd, BACKLOG) != 0) fail("listen");
        socklen_t len = sizeof(addr);
        if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) fail("getsockname");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) fail("epoll_ctl");
        printf("%s%u", i ? " " : "", (unsigned)ntohs(addr.sin_port));
    }
    printf("\n");
    fflush(stdout);
    struct epoll_event events[MAX_DESTINATIONS];
    for (;;) {
        int ready = epoll_wait(ep, events, MAX_DESTINATIONS, -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            for (;;) {
                int c = accept4(events[i].data.fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR || errno == ECONNABORTED) continue;
                    fail("accept4");
                }
                close(c);
            }
        }
    }
}

static void sleep_until(uint64_t deadline) {
    struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

struct payload {
    char data[MAX_PAYLOAD];
    size_t len;
};

static void read_payload(const char *dir, unsigned long i, struct payload *p) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/hello-%lu.bin", dir, i);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path);
    ssize_t n = read(fd, p->data, sizeof(p->data));
    if (n <= 0) fail(path);
    p->len = (size_t)n;
    close(fd);
}

static int client(int argc, char **argv) {
    double rate = strtod(argv[0], NULL);
    double seconds = strtod(argv[1], NULL);
    const char *dir = argv[2];
    int n = argc - 3;
    if (rate <= 0 || seconds <= 0 || n <= 0 || n > MAX_DESTINATIONS) {
        fprintf(stderr, "storm_loop: RATE and SECONDS must be positive, 1 to %d ports\n",
                MAX_DESTINATIONS);
        return 2;
    }
    static struct sockaddr_in dest[MAX_DESTINATIONS];
    static struct payload hello[MAX_DESTINATIONS];
    for (int i = 0; i < n; i++) {
        memset(&dest[i], 0, sizeof(dest[i]));
        dest[i].sin_family = AF_INET;
        dest[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        dest[i].sin_port = htons((uint16_t)parse_count(argv[3 + i], "PORT"));
        read_payload(dir, (unsigned long)i, &hello[i]);
    }

    unsigned long long done = 0, failed = 0;
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    for (uint64_t batch = 0;; batch++) {
        uint64_t batch_start = start + batch * BATCH_NS;
        uint64_t now = now_ns();
        if (now >= end || batch_start >= end) break;
        if (now < batch_start) sleep_until(batch_start);
        unsigned long long due =
            (unsigned long long)((double)((batch + 1) * BATCH_NS) * rate / 1e9);
        // Behind the pace, the backlog is caught up until the time is over, not beyond.
        while (done < due && ((done & 63) != 0 || now_ns() < end)) {
            int d = (int)(done % (unsigned long long)n);
            done++;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) fail("socket");
            if (connect(fd, (struct sockaddr *)&dest[d], sizeof(dest[d])) != 0) {
                failed++;
                close(fd);
                continue;
            }
            // The server may close first; a reset is no failure of the connection attempt.
            (void)send(fd, hello[d].data, hello[d].len, MSG_NOSIGNAL);
            close(fd);
        }
    }
    // A client that kept the pace has made the last batch's connections early.
    if (now_ns() < end) sleep_until(end);
    uint64_t elapsed = now_ns() - start;
    printf("%llu %llu %llu\n", done - failed, (unsigned long long)elapsed, failed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        return server(parse_count(argv[2], "N"));
    }
    if (argc >= 6 && strcmp(argv[1], "client") == 0) {
        return client(argc - 2, argv + 2);
    }
    fprintf(stderr, "usage: %s server N | client RATE SECONDS HELLO_DIR PORT...\n", argv[0]);
    return 2;
}
