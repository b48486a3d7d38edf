// net_loop connect ITERATIONS
// net_loop write ITERATIONS
//
// connect: listens on an ephemeral TCP port of 127.0.0.1, then ITERATIONS times: socket(),
// connect() to the listener, accept() of the new connection, close() of the accepted socket,
// close() of the connecting one; prints the mean cost of one connect cycle in nanoseconds on
// stdout. The listener's side runs in the same thread: over loopback the kernel completes the
// three-way handshake inside connect(), so the connection is waiting in the accept queue, and
// no wake-up of another thread or process adds noise. The accepted socket closes first, so the
// TIME_WAIT sockets are the listener's and the client never runs out of ephemeral ports.
//
// write: ITERATIONS times write() of 64 bytes to /dev/null; prints the mean cost of one
// write() in nanoseconds. A non-socket write, which no program of the agent should slow down.
//
// A short warm-up runs first in both modes.

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

#define WRITE_SIZE 64

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("net_loop: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "net_loop: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long long clamp(unsigned long long v, unsigned long long lo,
                                unsigned long long hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

// The listener on 127.0.0.1 (ephemeral port); its address in *addr.
static int listen_loopback(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket (listener)");
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = 0;
    if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0) fail("bind");
    if (listen(fd, 128) != 0) fail("listen");
    socklen_t len = sizeof(*addr);
    if (getsockname(fd, (struct sockaddr *)addr, &len) != 0) fail("getsockname");
    return fd;
}

static void connect_cycles(int listener, const struct sockaddr_in *addr, unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) fail("socket");
        if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0) fail("connect");
        int accepted = accept(listener, NULL, NULL);
        if (accepted < 0) fail("accept");
        close(accepted);
        close(fd);
    }
}

static void write_calls(int fd, unsigned long long n) {
    static char buf[WRITE_SIZE];
    for (unsigned long long i = 0; i < n; i++) {
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) fail("write /dev/null");
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s connect|write ITERATIONS\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    char *end = NULL;
    errno = 0;
    unsigned long long iterations = strtoull(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || iterations == 0) {
        fprintf(stderr, "net_loop: ITERATIONS must be a positive integer, got '%s'\n", argv[2]);
        return 2;
    }

    uint64_t start, elapsed;
    if (strcmp(mode, "connect") == 0) {
        struct sockaddr_in addr;
        int listener = listen_loopback(&addr);
        connect_cycles(listener, &addr, clamp(iterations / 100, 100, 1000));
        start = now_ns();
        connect_cycles(listener, &addr, iterations);
        elapsed = now_ns() - start;
        close(listener);
    } else if (strcmp(mode, "write") == 0) {
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (fd < 0) fail("open /dev/null");
        write_calls(fd, clamp(iterations / 100, 1000, 20000));
        start = now_ns();
        write_calls(fd, iterations);
        elapsed = now_ns() - start;
        close(fd);
    } else {
        fprintf(stderr, "net_loop: unknown mode '%s' (connect or write)\n", mode);
        return 2;
    }

    printf("%.2f\n", (double)elapsed / (double)iterations);
    return 0;
}
