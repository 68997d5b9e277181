"""A local stand-in for a web push service (RFC 8030): it records every POST to /push/<id>
(headers and the raw encrypted body) and answers as told per subscription id: 201 Created
(the default), 410 Gone (the subscription expired), or 500. It also holds what a browser
would: a subscription's P-256 key pair and auth secret, to decrypt a recorded message the
way the user agent does (RFC 8291 over RFC 8188's aes128gcm), and the VAPID key pair."""

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def public_point(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


class Subscription:
    """A browser's push subscription: endpoint, its P-256 key pair and 16-byte auth secret."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = secrets.token_bytes(16)

    def json(self):
        """PushSubscription.toJSON()."""
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64u(public_point(self.key)), "auth": b64u(self.auth)}}

    def decrypt(self, body):
        """The plaintext of an aes128gcm message (one record) encrypted to this subscription."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        assert idlen == 65, idlen
        as_public, ciphertext = body[21:21 + idlen], body[21 + idlen:]
        assert len(ciphertext) <= rs, (len(ciphertext), rs)
        ua_public = public_point(self.key)
        secret = self.key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public))
        ikm = HKDF(hashes.SHA256(), 32, self.auth, b"WebPush: info\x00" + ua_public + as_public).derive(secret)
        cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
        nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
        record = AESGCM(cek).decrypt(nonce, ciphertext, None)
        # The last record ends with the delimiter 0x02, then optional zero padding.
        record = record.rstrip(b"\x00")
        assert record.endswith(b"\x02"), record[-4:]
        return record[:-1]


class PushService:
    def __init__(self, host, port, workdir):
        self.base = f"http://{host}:{port}"
        self.lock = threading.Lock()
        self.requests = []  # dicts: id, headers, body (bytes), at
        self.fail = {}      # subscription id -> 410 | 500
        self.vapid = ec.generate_private_key(ec.SECP256R1())
        self.vapid_file = workdir / "vapid.pem"
        self.vapid_file.write_bytes(self.vapid.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def subscribe(self):
        """A new subscription whose endpoint is on this service."""
        return Subscription(f"{self.base}/push/{secrets.token_urlsafe(24)}")

    def to(self, sub):
        sid = sub.endpoint.rsplit("/", 1)[1]
        with self.lock:
            return [r for r in self.requests if r["id"] == sid]

    def wait(self, sub, n=1, timeout=30.0):
        deadline = time.time() + timeout
        while True:
            got = self.to(sub)
            if len(got) >= n:
                return got
            assert time.time() < deadline, f"{sub.endpoint}: {len(got)} pushes, wanted {n}"
            time.sleep(0.05)

    def _handler(svc):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not self.path.startswith("/push/"):
                    status = 404
                else:
                    sid = self.path[len("/push/"):]
                    with svc.lock:
                        svc.requests.append({"id": sid, "headers": dict(self.headers), "body": raw,
                                             "at": time.time()})
                        status = svc.fail.get(sid, 201)
                body = json.dumps({"status": status}).encode()
                self.send_response(status)
                if status == 201:
                    self.send_header("Location", f"{svc.base}/message/{secrets.token_hex(8)}")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        return H
