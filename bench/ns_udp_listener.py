"""UDP listener for authorize_latency.py, run in the fake internet's namespace.

It timestamps arrivals with time.monotonic() (CLOCK_MONOTONIC is one clock for every network
namespace, so the parent can subtract its own readings). Commands, one per line on stdin:

  arm QUIET_MS   wait until no datagram has arrived for QUIET_MS, then answer "armed" and
                 report the next arrival as "hit <monotonic>"; "noisy <n>" if datagrams keep
                 arriving for a whole second (the phone is not captive as it should be)
  disarm         forget a pending arm; answers "disarmed"
  count          answers "count <datagrams so far>"

Stdlib only; exits when stdin closes.
"""

from __future__ import annotations

import select
import socket
import sys
import time


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((host, port))
    sock.setblocking(False)
    stdin = sys.stdin.fileno()
    count = 0
    last = 0.0
    armed = False
    pending: tuple[float, float] | None = None  # (quiet seconds, give-up time) of an arm
    buffer = b""
    print("ready", flush=True)
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, min(last + pending[0], pending[1]) - time.monotonic())
        readable, _, _ = select.select([sock, stdin], [], [], timeout)
        if sock in readable:
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                now = time.monotonic()
                count += 1
                if armed:
                    armed = False
                    print(f"hit {now:.9f}", flush=True)
                last = now
        if pending:
            now = time.monotonic()
            if now - last >= pending[0]:
                pending, armed = None, True
                print("armed", flush=True)
            elif now >= pending[1]:
                pending = None
                print(f"noisy {count}", flush=True)
        if stdin in readable:
            chunk = sys.stdin.buffer.raw.read(4096)
            if not chunk:
                return 0
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                cmd = line.decode().split()
                if not cmd:
                    continue
                if cmd[0] == "arm":
                    armed = False
                    pending = (float(cmd[1]) / 1000, time.monotonic() + 1.0)
                elif cmd[0] == "disarm":
                    armed, pending = False, None
                    print("disarmed", flush=True)
                elif cmd[0] == "count":
                    print(f"count {count}", flush=True)
                else:
                    print(f"error unknown command {cmd[0]!r}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
