"""A local stand-in for Twilio's Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json):
it checks HTTP Basic auth (account sid and auth token) and the form body the way Twilio does,
records every request, and answers per recipient number as told: accept (201), fail with
500, or refuse with 400 (21211, an invalid 'To')."""

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SID = "AC" + "e2e0" * 8
TOKEN = "e2e-auth-token"
FROM = "+15005550006"


class SmsProvider:
    def __init__(self, port):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lock = threading.Lock()
        self.requests = []  # dicts: to, from, body, at, answer
        self.fail = {}      # number -> "500" | "400"
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def env(self):
        return {"SMS_BASE_URL": self.base, "SMS_ACCOUNT_SID": SID, "SMS_AUTH_TOKEN": TOKEN,
                "SMS_FROM": FROM}

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def to(self, number):
        with self.lock:
            return [r for r in self.requests if r["to"] == number]

    def wait(self, number, n=1, timeout=120.0):
        deadline = time.time() + timeout
        while True:
            got = self.to(number)
            if len(got) >= n:
                return got
            assert time.time() < deadline, f"{number}: {len(got)} SMS, wanted {n}"
            time.sleep(0.05)

    def _handler(prov):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
                    return self._reply(404, {"code": 20404, "message": "not found"})
                want = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    return self._reply(401, {"code": 20003, "message": "Authenticate"})
                if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                    return self._reply(400, {"code": 20001, "message": "form expected"})
                form = urllib.parse.parse_qs(raw.decode(), strict_parsing=True)
                to, frm, body = form["To"][0], form["From"][0], form["Body"][0]
                with prov.lock:
                    mode = prov.fail.get(to)
                    prov.requests.append({"to": to, "from": frm, "body": body, "at": time.time(),
                                          "answer": mode or "201"})
                if mode == "500":
                    return self._reply(500, {"code": 20500, "message": "Internal Server Error"})
                if mode == "400":
                    return self._reply(400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number."})
                self._reply(201, {"sid": "SM" + "0" * 32, "status": "queued", "to": to, "from": frm, "body": body})
        return H
