"""A local stand-in for a web push service (RFC 8030): it records every POST to /push/<id>
(headers and the raw encrypted body) and answers as told per subscription id: 201 Created
(the default), 410 Gone (the subscription expired), or 500. It also holds what a browser
would: a subscription's P-256 key pair and auth secret, to decrypt a recorded message the
way the user agent does (RFC 8291 over RFC 8188's aes128gcm), and the VAPID key pair."""

import base64
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recording_server import RecordingServer


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


class PushService(RecordingServer):
    def __init__(self, host, port, workdir):
        super().__init__(host, port)
        self.fail = {}      # subscription id -> 410 | 500; requests: dicts id, headers, body (bytes), at
        self.vapid = ec.generate_private_key(ec.SECP256R1())
        self.vapid_file = workdir / "vapid.pem"
        self.vapid_file.write_bytes(self.vapid.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def subscribe(self):
        """A new subscription whose endpoint is on this service."""
        return Subscription(f"{self.base}/push/{secrets.token_urlsafe(24)}")

    def to(self, sub):
        sid = sub.endpoint.rsplit("/", 1)[1]
        return self.matching(lambda r: r["id"] == sid)

    def wait(self, sub, n=1, timeout=30.0):
        sid = sub.endpoint.rsplit("/", 1)[1]
        return self.wait_for(lambda r: r["id"] == sid, n, timeout, f"{sub.endpoint}: pushes")

    def answer(self, req, method, raw):
        if method != "POST" or not req.path.startswith("/push/"):
            return 404, {"status": 404}, []
        sid = req.path[len("/push/"):]
        self.record(id=sid, headers=dict(req.headers), body=raw)
        with self.lock:
            status = self.fail.get(sid, 201)
        headers = [("Location", f"{self.base}/message/{secrets.token_hex(8)}")] if status == 201 else []
        return status, {"status": status}, headers
