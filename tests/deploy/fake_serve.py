"""A stand-in for ``python -m modelseal serve`` with health endpoints a test controls.

The local backend runs ``INTERPRETER -m modelseal serve ... --port P``; a test
passes this file (made executable with a shebang) as the interpreter. It
answers ``/v2/health/ready`` and ``/v2/health/live`` with 200 until the file
named by ``FAKE_SERVE_SICK`` exists, then with 500 (a hung model), and
prints one line per start so a test can count them. With
``FAKE_SERVE_IGNORE_TERM`` set it ignores SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        sick = os.path.exists(os.environ.get("FAKE_SERVE_SICK", "/nonexistent"))
        self.send_response(500 if sick else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    if os.environ.get("FAKE_SERVE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a process that will not stop
    port = int(sys.argv[sys.argv.index("--port") + 1])
    print(f"fake serve on {port}", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
