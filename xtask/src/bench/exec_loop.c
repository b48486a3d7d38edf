// exec_loop PROGRAM ITERATIONS
//
// Runs PROGRAM (no arguments) ITERATIONS times, one at a time: fork(), execve() in the child,
// waitpid() in the parent; prints the mean cost of one fork+execve+wait in nanoseconds on
// stdout. A short warm-up runs first.
//
// Every execve gets the same environment of exactly ENV_COUNT variables: the usual session
// variables (PATH, HOME, LANG, LC_*, XDG_*, ...), generic application settings, and
// SECRET_COUNT secret-like ones (API_TOKEN, DB_PASSWORD, an AWS access key id and secret key)
// whose values are generated here from a fixed seed, so the agent's capture path runs on
// every exec (and the values look like credentials without any real one in this file).

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ENV_COUNT 100
#define SECRET_COUNT 4
#define ENTRY_MAX 256

static char env_storage[ENV_COUNT][ENTRY_MAX];
static char *envp[ENV_COUNT + 1];
static int env_len = 0;

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("exec_loop: clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void add_env(const char *name, const char *value) {
    if (env_len >= ENV_COUNT) {
        fprintf(stderr, "exec_loop: more than %d variables\n", ENV_COUNT);
        exit(1);
    }
    int n = snprintf(env_storage[env_len], ENTRY_MAX, "%s=%s", name, value);
    if (n < 0 || n >= ENTRY_MAX) {
        fprintf(stderr, "exec_loop: variable %s too long\n", name);
        exit(1);
    }
    envp[env_len] = env_storage[env_len];
    env_len++;
}

// xorshift64*, fixed seed: the same "random-looking" values on every run.
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t next_random(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

// Writes `len` characters drawn from `alphabet` after `prefix` into `out` (NUL-terminated).
static void random_value(char *out, size_t out_size, const char *prefix, const char *alphabet,
                         size_t len) {
    size_t plen = strlen(prefix);
    size_t alen = strlen(alphabet);
    if (plen + len + 1 > out_size) {
        fprintf(stderr, "exec_loop: value too long\n");
        exit(1);
    }
    memcpy(out, prefix, plen);
    for (size_t i = 0; i < len; i++) {
        out[plen + i] = alphabet[next_random() % alen];
    }
    out[plen + len] = '\0';
}

static void build_env(void) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static const char base32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    static const char base64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    // A login session's usual variables.
    add_env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    add_env("HOME", "/home/bench");
    add_env("USER", "bench");
    add_env("LOGNAME", "bench");
    add_env("SHELL", "/bin/bash");
    add_env("TERM", "xterm-256color");
    add_env("PWD", "/home/bench/src/service");
    add_env("OLDPWD", "/home/bench");
    add_env("SHLVL", "2");
    add_env("HOSTNAME", "bench-host-01");
    add_env("TZ", "UTC");
    add_env("EDITOR", "vi");
    add_env("PAGER", "less");
    add_env("LESS", "-R");
    add_env("MAIL", "/var/mail/bench");
    add_env("LANG", "en_US.UTF-8");
    add_env("LANGUAGE", "en_US:en");
    static const char *const lc[] = {
        "LC_CTYPE",   "LC_NUMERIC",   "LC_TIME",        "LC_COLLATE",
        "LC_MONETARY", "LC_MESSAGES", "LC_PAPER",       "LC_NAME",
        "LC_ADDRESS", "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION",
    };
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) {
        add_env(lc[i], "en_US.UTF-8");
    }
    add_env("XDG_RUNTIME_DIR", "/run/user/1000");
    add_env("XDG_CONFIG_HOME", "/home/bench/.config");
    add_env("XDG_DATA_HOME", "/home/bench/.local/share");
    add_env("XDG_CACHE_HOME", "/home/bench/.cache");
    add_env("XDG_STATE_HOME", "/home/bench/.local/state");
    add_env("XDG_DATA_DIRS", "/usr/local/share:/usr/share:/var/lib/snapd/desktop");
    add_env("XDG_CONFIG_DIRS", "/etc/xdg");
    add_env("XDG_SESSION_TYPE", "tty");
    add_env("XDG_SESSION_ID", "42");
    add_env("SSH_TTY", "/dev/pts/0");
    add_env("SSH_CONNECTION", "10.0.0.2 51234 10.0.0.10 22");
    add_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus");

    // The secret-like variables, spread among the application settings below.
    char api_token[64], db_password[64], aws_key_id[64], aws_secret[64];
    random_value(api_token, sizeof api_token, "", alnum, 32);
    random_value(db_password, sizeof db_password, "", alnum, 20);
    random_value(aws_key_id, sizeof aws_key_id, "AKIA", base32, 16);
    random_value(aws_secret, sizeof aws_secret, "", base64, 40);
    const struct {
        const char *name;
        const char *value;
    } secrets[SECRET_COUNT] = {
        {"API_TOKEN", api_token},
        {"DB_PASSWORD", db_password},
        {"AWS_ACCESS_KEY_ID", aws_key_id},
        {"AWS_SECRET_ACCESS_KEY", aws_secret},
    };

    // Generic application settings fill the rest; a secret every 15 of them.
    int settings = ENV_COUNT - env_len - SECRET_COUNT;
    int secret = 0;
    for (int i = 0; i < settings; i++) {
        if (i % 15 == 7 && secret < SECRET_COUNT) {
            add_env(secrets[secret].name, secrets[secret].value);
            secret++;
        }
        char name[64], value[128];
        snprintf(name, sizeof name, "APP_SETTING_%d", i);
        snprintf(value, sizeof value, "value-%d-%08llx", i,
                 (unsigned long long)(next_random() & 0xffffffffu));
        add_env(name, value);
    }
    while (secret < SECRET_COUNT) {
        add_env(secrets[secret].name, secrets[secret].value);
        secret++;
    }
    if (env_len != ENV_COUNT) {
        fprintf(stderr, "exec_loop: built %d variables, not %d\n", env_len, ENV_COUNT);
        exit(1);
    }
    envp[env_len] = NULL;
}

static void run(const char *program, unsigned long long n) {
    char *const argv[] = {(char *)program, NULL};
    for (unsigned long long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("exec_loop: fork");
            exit(1);
        }
        if (pid == 0) {
            execve(program, argv, envp);
            // Only reached on failure; _exit skips the parent's stdio buffers.
            fprintf(stderr, "exec_loop: execve %s: %s\n", program, strerror(errno));
            _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                perror("exec_loop: waitpid");
                exit(1);
            }
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "exec_loop: %s did not exit with 0 (status %d)\n", program, status);
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PROGRAM ITERATIONS\n", argv[0]);
        return 2;
    }
    const char *program = argv[1];
    char *end = NULL;
    errno = 0;
    unsigned long long iterations = strtoull(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || iterations == 0) {
        fprintf(stderr, "exec_loop: ITERATIONS must be a positive integer, got '%s'\n", argv[2]);
        return 2;
    }
    build_env();

    // Keep in sync with `warmup` in xtask/src/bench/exec.rs.
    unsigned long long warmup = iterations / 100;
    if (warmup < 20) warmup = 20;
    if (warmup > 200) warmup = 200;
    run(program, warmup);

    uint64_t start = now_ns();
    run(program, iterations);
    uint64_t elapsed = now_ns() - start;

    printf("%.2f\n", (double)elapsed / (double)iterations);
    return 0;
}
