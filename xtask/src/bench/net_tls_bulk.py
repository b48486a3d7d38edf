#!/usr/bin/env python3
"""net_tls_bulk.py CERT KEY MIB

Sends MIB MiB through one TLS connection over loopback and prints the mean time per MiB in
nanoseconds on stdout.

A forked child is the server: it accepts one connection on an ephemeral port of 127.0.0.1
(certificate CERT, key KEY), reads and discards everything, and answers one byte after the
warm-up and one after the timed bytes. The parent is the client: it sends in WRITE_SIZE-byte
writes, one SSL_write_ex call of the system libssl each (Python's ssl module), first a warm-up
(1/16 of MIB, at most 16 MiB), then, timed from the first write to the server's answer (so the
bytes still in flight count), the MIB MiB.

The server dies with the client (PR_SET_PDEATHSIG, EOF on the connection, a timeout on
accept), and the client kills it on any error.
"""

import ctypes
import os
import signal
import socket
import ssl
import sys
import time

WRITE_SIZE = 16 * 1024
MIB = 1 << 20
ACCEPT_TIMEOUT_S = 60
PR_SET_PDEATHSIG = 1


def read_exactly(conn, buf, count):
    """Reads and discards `count` bytes."""
    view = memoryview(buf)
    left = count
    while left > 0:
        n = conn.recv_into(view[: min(left, len(buf))])
        if n == 0:
            raise ConnectionError(f"EOF with {left} bytes still expected")
        left -= n


def serve(listener, parent, cert, key, warm, total):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    conn, _ = listener.accept()
    listener.close()
    conn.settimeout(None)
    with ctx.wrap_socket(conn, server_side=True) as tls:
        buf = bytearray(4 * WRITE_SIZE)
        read_exactly(tls, buf, warm)
        tls.sendall(b"w")
        read_exactly(tls, buf, total)
        tls.sendall(b"d")
        # Wait for the client to close.
        while tls.recv_into(buf) > 0:
            pass


def expect(tls, byte):
    got = tls.recv(1)
    if got != byte:
        raise ConnectionError(f"expected {byte!r} from the server, got {got!r}")


def client(port, warm, total):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    chunk = os.urandom(WRITE_SIZE)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            for _ in range(warm // WRITE_SIZE):
                tls.sendall(chunk)
            expect(tls, b"w")
            writes = total // WRITE_SIZE
            start = time.perf_counter_ns()
            for _ in range(writes):
                tls.sendall(chunk)
            expect(tls, b"d")
            return time.perf_counter_ns() - start


def main():
    if len(sys.argv) != 4:
        print(f"usage: {sys.argv[0]} CERT KEY MIB", file=sys.stderr)
        return 2
    cert, key = sys.argv[1], sys.argv[2]
    try:
        mib = int(sys.argv[3])
    except ValueError:
        mib = 0
    if mib <= 0:
        print(f"net_tls_bulk: MIB must be a positive integer, got {sys.argv[3]!r}", file=sys.stderr)
        return 2
    total = mib * MIB
    warm = max(WRITE_SIZE, min(total // 16, 16 * MIB) // WRITE_SIZE * WRITE_SIZE)

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(ACCEPT_TIMEOUT_S)
    port = listener.getsockname()[1]
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            serve(listener, parent, cert, key, warm, total)
            code = 0
        except BaseException as err:  # noqa: BLE001 - report anything, then exit
            print(f"net_tls_bulk: server: {err!r}", file=sys.stderr)
        finally:
            os._exit(code)
    listener.close()

    try:
        elapsed = client(port, warm, total)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"net_tls_bulk: server failed (wait status {status})", file=sys.stderr)
        return 1
    print(f"{elapsed * MIB / total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
