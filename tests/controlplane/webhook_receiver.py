"""A webhook receiver as its own process (killed with -9 by the tests).

Usage: python webhook_receiver.py PORT SECRET OUT.jsonl
Verifies every request with the ``standardwebhooks`` package (an independent
implementation of the spec), appends one JSON line per good one (fsync'd
before the 200 is sent), answers 400 to a bad signature.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT, SECRET, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOOK = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            payload = HOOK.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as exc:
            line = {"bad": str(exc)}
            status = 400
        else:
            line = {
                "id": self.headers["webhook-id"],
                "type": payload["type"],
                "data": payload["data"],
            }
            status = 200
        with open(OUT, "a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
