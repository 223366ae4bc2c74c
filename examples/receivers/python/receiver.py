"""Minimal ProductBridge webhook receiver: Python 3, standard library only.

    WEBHOOK_SECRET=whsec_... PORT=8080 python3 receiver.py

Verifies X-ProductBridge-Signature (sha256=<hex HMAC-SHA256 of the raw body>)
in constant time; answers 204 when it verifies, 401 when it does not.
"""

import hashlib
import hmac
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("WEBHOOK_SECRET")
PORT = int(os.environ.get("PORT", "8080"))
if not SECRET:
    sys.exit("WEBHOOK_SECRET is not set")


def verify(raw_body: bytes, header) -> bool:
    if header is None or not header.startswith("sha256="):
        return False
    expected = hmac.new(SECRET.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest rejects non-ASCII str arguments.
    received = header[len("sha256="):].encode("utf-8", "replace")
    return hmac.compare_digest(received, expected.encode("ascii"))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        # The raw bytes as sent: never verify a re-serialised json.loads result.
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = verify(raw_body, self.headers.get("X-ProductBridge-Signature"))
        event = self.headers.get("X-ProductBridge-Event", "-")
        delivery = self.headers.get("X-ProductBridge-Delivery-Id", "-")
        print(f"event={event} delivery={delivery} verified={'yes' if ok else 'no'}", flush=True)
        if ok:
            pass  # Handle json.loads(raw_body) here, idempotently per delivery id.
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, format, *args):
        pass  # One line per request, printed above.


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"listening on http://127.0.0.1:{PORT}/", flush=True)
    server.serve_forever()
