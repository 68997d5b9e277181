"""A local stand-in for FCM HTTP v1 (with Google's OAuth 2.0 token endpoint) and APNs: it
checks the credentials the way the providers do (the service-account assertion's RS256
signature and claims, the APNs provider token's ES256 signature, team and key id), records
every request, and answers per device token as told: accept, fail with 500, or report the
token dead (FCM 404 UNREGISTERED, APNs 410 Unregistered)."""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PROJECT = "chat-e2e"
TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
EMAIL = "push@chat-e2e.iam.gserviceaccount.com"


class Provider:
    def __init__(self, port, workdir):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lock = threading.Lock()
        self.requests = []       # dicts: kind, path, headers, body (json), token, at
        self.fail = {}           # device token -> "500" | "dead"
        self.access_tokens = set()
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_pub = rsa_key.public_key()
        self.ec_pub = ec_key.public_key()
        pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        self.credentials = workdir / "fcm-service-account.json"
        self.credentials.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "client_email": EMAIL,
            "private_key": pem(rsa_key), "token_uri": f"{self.base}/token"}))
        self.apns_key = workdir / "apns-key.p8"
        self.apns_key.write_text(pem(ec_key))
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def env(self):
        return {"FCM_BASE_URL": self.base, "FCM_PROJECT_ID": PROJECT,
                "FCM_CREDENTIALS_FILE": str(self.credentials), "APNS_BASE_URL": self.base,
                "APNS_KEY_FILE": str(self.apns_key), "APNS_KEY_ID": KEY_ID,
                "APNS_TEAM_ID": TEAM, "APNS_TOPIC": "com.example.chat"}

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def sends(self, token=None):
        with self.lock:
            return [r for r in self.requests if r["kind"] in ("fcm", "apns")
                    and (token is None or r["token"] == token)]

    def wait_sends(self, token, n, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.sends(token)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{token}: {len(self.sends(token))} sends, wanted {n}")

    @staticmethod
    def message_id(r):
        """The message a recorded send is about (FCM: message.data; APNs: top level)."""
        body = r["body"]
        return (body.get("message", {}).get("data", {}) if r["kind"] == "fcm" else body).get("message_id")

    def sends_of(self, token, mid):
        return [r for r in self.sends(token) if self.message_id(r) == mid]

    def wait_message(self, token, mid, n=1, timeout=20.0):
        """Waits until `n` sends to `token` about message `mid` were recorded; returns them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.sends_of(token, mid)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{token}: {len(self.sends_of(token, mid))} sends of {mid}, wanted {n}")

    def _handler(prov):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path
                if path == "/token":
                    return self._token(raw)
                if path == f"/v1/projects/{PROJECT}/messages:send":
                    return self._fcm(raw)
                if path.startswith("/3/device/"):
                    return self._apns(path[len("/3/device/"):], raw)
                self._reply(404, {"error": "no such endpoint"})

            def _token(self, raw):
                form = urllib.parse.parse_qs(raw.decode())
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                try:
                    claims = jwt.decode(form["assertion"][0], prov.rsa_pub, algorithms=["RS256"],
                                        audience=f"{prov.base}/token", issuer=EMAIL)
                except jwt.PyJWTError as e:
                    return self._reply(400, {"error": "invalid_grant", "error_description": str(e)})
                assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
                assert claims["exp"] - claims["iat"] <= 3600
                tok = "ya29.e2e-" + str(len(prov.access_tokens))
                with prov.lock:
                    prov.access_tokens.add(tok)
                    prov.requests.append({"kind": "token", "at": time.time()})
                self._reply(200, {"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})

            def _record(self, kind, token, body):
                with prov.lock:
                    prov.requests.append({"kind": kind, "token": token, "body": body,
                                          "headers": dict(self.headers), "at": time.time()})
                    return prov.fail.get(token)

            def _fcm(self, raw):
                auth = self.headers.get("Authorization", "")
                if auth[len("Bearer "):] not in prov.access_tokens:
                    return self._reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
                body = json.loads(raw)
                mode = self._record("fcm", body["message"]["token"], body)
                if mode == "500":
                    return self._reply(500, {"error": {"code": 500, "status": "INTERNAL"}})
                if mode == "dead":
                    return self._reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": "UNREGISTERED"}]}})
                self._reply(200, {"name": f"projects/{PROJECT}/messages/{len(prov.requests)}"})

            def _apns(self, token, raw):
                auth = self.headers.get("authorization", "")
                try:
                    tok = auth[len("bearer "):]
                    assert jwt.get_unverified_header(tok)["kid"] == KEY_ID
                    claims = jwt.decode(tok, prov.ec_pub, algorithms=["ES256"], issuer=TEAM,
                                        options={"require": ["iat"]})
                    assert claims["iat"] <= time.time() + 5
                except (jwt.PyJWTError, AssertionError, KeyError):
                    return self._reply(403, {"reason": "InvalidProviderToken"})
                mode = self._record("apns", token, json.loads(raw))
                if mode == "500":
                    return self._reply(500, {"reason": "InternalServerError"})
                if mode == "dead":
                    return self._reply(410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)})
                self._reply(200, {}, [("apns-id", "00000000-0000-0000-0000-000000000001")])
        return H
