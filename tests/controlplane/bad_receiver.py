"""A webhook "receiver" that misbehaves, as its own process (red team #12, findings 1 and 2).

Usage: python bad_receiver.py MODE
  banner  answers every connection with an SSH banner and closes (not HTTP at all)
  drip    sends a status line, then one header byte every 0.5 s, forever
Listens on a free port of 127.0.0.1 and prints it on stdout once listening.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

MODE = sys.argv[1]


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            conn.recv(65536)
            if MODE == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            conn.sendall(b"X-Slow: ")
            while True:  # each byte well inside any per-read timeout
                time.sleep(0.5)
                conn.sendall(b"a")
        except OSError:
            return  # the client gave up: what the deadline is for


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(50)
print(listener.getsockname()[1], flush=True)
while True:
    client, _ = listener.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
