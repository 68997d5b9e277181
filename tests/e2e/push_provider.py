"""A local stand-in for FCM HTTP v1 (with Google's OAuth 2.0 token endpoint) and APNs: it
checks the credentials the way the providers do (the service-account assertion's RS256
signature and claims, the APNs provider token's ES256 signature, team and key id), records
every request, and answers per device token as told: accept, fail with 500, report the
token dead (FCM 404 UNREGISTERED, APNs 410 Unregistered), or hold the request STALL_S
seconds before accepting it (a provider that hangs)."""

import json
import time
import urllib.parse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from recording_server import RecordingServer

PROJECT = "chat-e2e"
STALL_S = 40  # longer than the e2e harness waits for a stop (20 s)
TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
EMAIL = "push@chat-e2e.iam.gserviceaccount.com"


class Provider(RecordingServer):
    def __init__(self, port, workdir):
        super().__init__("127.0.0.1", port)
        # requests: dicts kind, token, headers, body (json), at;
        # fail: device token -> "500" | "dead" | "stall"
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

    def env(self):
        return {"FCM_BASE_URL": self.base, "FCM_PROJECT_ID": PROJECT,
                "FCM_CREDENTIALS_FILE": str(self.credentials), "APNS_BASE_URL": self.base,
                "APNS_KEY_FILE": str(self.apns_key), "APNS_KEY_ID": KEY_ID,
                "APNS_TEAM_ID": TEAM, "APNS_TOPIC": "com.example.chat"}

    def sends(self, token=None):
        return self.matching(lambda r: r["kind"] in ("fcm", "apns") and (token is None or r["token"] == token))

    def wait_sends(self, token, n, timeout=20.0):
        return self.wait_for(lambda r: r["kind"] in ("fcm", "apns") and r["token"] == token, n, timeout,
                             f"{token}: sends")

    @staticmethod
    def message_id(r):
        """The message a recorded send is about (FCM: message.data; APNs: top level)."""
        body = r["body"]
        return (body.get("message", {}).get("data", {}) if r["kind"] == "fcm" else body).get("message_id")

    def sends_of(self, token, mid):
        return [r for r in self.sends(token) if self.message_id(r) == mid]

    def wait_message(self, token, mid, n=1, timeout=20.0):
        """Waits until `n` sends to `token` about message `mid` were recorded; returns them."""
        return self.wait_for(lambda r: r["kind"] in ("fcm", "apns") and r["token"] == token
                             and self.message_id(r) == mid, n, timeout, f"{token}: sends of {mid}")

    def answer(self, req, method, raw):
        if method != "POST":
            return 404, {"error": "no such endpoint"}, []
        if req.path == "/token":
            return self._token(raw)
        if req.path == f"/v1/projects/{PROJECT}/messages:send":
            return self._fcm(req, raw)
        if req.path.startswith("/3/device/"):
            return self._apns(req, req.path[len("/3/device/"):], raw)
        return 404, {"error": "no such endpoint"}, []

    def _token(self, raw):
        form = urllib.parse.parse_qs(raw.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        try:
            claims = jwt.decode(form["assertion"][0], self.rsa_pub, algorithms=["RS256"],
                                audience=f"{self.base}/token", issuer=EMAIL)
        except jwt.PyJWTError as e:
            return 400, {"error": "invalid_grant", "error_description": str(e)}, []
        assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        assert claims["exp"] - claims["iat"] <= 3600
        with self.lock:
            tok = "ya29.e2e-" + str(len(self.access_tokens))
            self.access_tokens.add(tok)
        self.record(kind="token")
        return 200, {"access_token": tok, "expires_in": 3599, "token_type": "Bearer"}, []

    def _record(self, req, kind, token, body):
        self.record(kind=kind, token=token, body=body, headers=dict(req.headers))
        with self.lock:
            return self.fail.get(token)

    def _fcm(self, req, raw):
        auth = req.headers.get("Authorization", "")
        with self.lock:
            known = auth[len("Bearer "):] in self.access_tokens
        if not known:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, []
        body = json.loads(raw)
        mode = self._record(req, "fcm", body["message"]["token"], body)
        if mode == "stall":
            time.sleep(STALL_S)
        if mode == "500":
            return 500, {"error": {"code": 500, "status": "INTERNAL"}}, []
        if mode == "dead":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                 "errorCode": "UNREGISTERED"}]}}, []
        return 200, {"name": f"projects/{PROJECT}/messages/{len(self.requests)}"}, []

    def _apns(self, req, token, raw):
        auth = req.headers.get("authorization", "")
        try:
            tok = auth[len("bearer "):]
            assert jwt.get_unverified_header(tok)["kid"] == KEY_ID
            claims = jwt.decode(tok, self.ec_pub, algorithms=["ES256"], issuer=TEAM,
                                options={"require": ["iat"]})
            assert claims["iat"] <= time.time() + 5
        except (jwt.PyJWTError, AssertionError, KeyError):
            return 403, {"reason": "InvalidProviderToken"}, []
        mode = self._record(req, "apns", token, json.loads(raw))
        if mode == "500":
            return 500, {"reason": "InternalServerError"}, []
        if mode == "dead":
            return 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}, []
        return 200, {}, [("apns-id", "00000000-0000-0000-0000-000000000001")]
