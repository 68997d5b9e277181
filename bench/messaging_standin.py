"""A stand-in for the messaging service in the socket benchmark's idle-memory run
(bench/socket_bench.py, BENCH_PARTS=idle): it answers the two calls the socket service makes for
each new connection, for a user who is in no conversation, with the bodies the real service
returns for such a user:

  GET  /v1/conversations?limit=100  -> 200 {"items":[],"next_cursor":null}
  POST /v1/sync                     -> 200 {"items":[],"next_cursor":"AQ","has_more":false}

Why: against the shared FerretDB each real call takes about 90 ms and they run nearly one at a
time, so 10,000 connections (20,000 calls) took over half an hour; the socket service's memory
for an idle connection does not depend on who answers. The bearer token is still verified
(RS256, the benchmark's key): a call without the connection's valid token gets 401, which the
socket service turns into a closed connection and the benchmark into a failed run. Anything
else gets 404.

    python bench/messaging_standin.py PORT PUBLIC_KEY_PEM
"""

import http.server
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization

PORT = int(sys.argv[1])
KEY = serialization.load_pem_public_key(open(sys.argv[2], "rb").read())
CONVERSATIONS = json.dumps({"items": [], "next_cursor": None}).encode()
SYNC = json.dumps({"items": [], "next_cursor": "AQ", "has_more": False}).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorised(self):
        auth = self.headers.get("Authorization", "")
        try:
            jwt.decode(auth.removeprefix("Bearer "), KEY, algorithms=["RS256"], audience="chat-api")
            return True
        except jwt.PyJWTError:
            self.answer(401, b'{"title":"bad token"}')
            return False

    def do_GET(self):
        if self.path.startswith("/health/"):
            return self.answer(200, b"{}")
        if not self.authorised():
            return
        if self.path.startswith("/v1/conversations?"):
            return self.answer(200, CONVERSATIONS)
        self.answer(404, b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.authorised():
            return
        if self.path == "/v1/sync":
            return self.answer(200, SYNC)
        self.answer(404, b"{}")

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
