"""The recording HTTP server every local provider stand-in is built on (push providers, the
web push service, the SMS API, the SNS/SES stand-in, webhook receivers): it records what it is
sent, answers through `answer()` (which a stand-in overrides, and which can be told to fail),
and lets a test look up and wait for what was recorded."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingServer:
    """A threaded HTTP server on host:port. `requests` holds the recorded dicts (each with
    `at`, the time it was recorded); `fail` is the stand-in's own table of what to fail."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.base = f"http://{host}:{port}"
        self.lock = threading.Lock()
        self.requests = []
        self.fail = {}
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def record(self, **entry):
        """Records `entry` (with `at` now) and returns it."""
        entry.setdefault("at", time.time())
        with self.lock:
            self.requests.append(entry)
        return entry

    def matching(self, pred):
        with self.lock:
            return [r for r in self.requests if pred(r)]

    def wait_for(self, pred, n=1, timeout=30.0, what="requests"):
        """The recorded requests matching `pred` once there are at least `n`."""
        deadline = time.time() + timeout
        while True:
            got = self.matching(pred)
            if len(got) >= n:
                return got
            assert time.time() < deadline, f"{what}: {len(got)} recorded, wanted {n}"
            time.sleep(0.05)

    def answer(self, req, method, raw):
        """Overridden by each stand-in: handles one request (`req` the BaseHTTPRequestHandler,
        for its path and headers; `raw` the body) and returns (status, body, headers): body a
        dict (sent as JSON), bytes, or None; headers a list of (name, value)."""
        return 404, {"error": "no such endpoint"}, []

    def _handler(srv):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _do(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, body, headers = srv.answer(self, self.command, raw)
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = [("Content-Type", "application/json")] + list(headers)
                body = body or b""
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _do
        return H
