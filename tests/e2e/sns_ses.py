"""A local stand-in for Amazon SNS delivering Amazon SES notifications to an HTTP(S)
subscriber: it serves its signing certificate (self-signed, made here) at /cert.pem, records
subscription confirmations (GET /confirm?Token=...), and POSTs SNS messages
(SubscriptionConfirmation, Notification) signed the way SNS signs them: SignatureVersion 1
(SHA1withRSA) or 2 (SHA256withRSA) over the documented string to sign
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html)."""

import base64
import datetime
import json
import secrets
import urllib.parse
import uuid

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from recording_server import RecordingServer

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-notifications"


def rsa_cert():
    """A new RSA key and a self-signed certificate of it (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-1.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def string_to_sign(m):
    keys = (["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"] if m["Type"] == "Notification"
            else ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"])
    return "".join(f"{k}\n{m[k]}\n" for k in keys if k in m)


class SnsSes(RecordingServer):
    def __init__(self, port):
        super().__init__("127.0.0.1", port)
        self.key, self.cert = rsa_cert()

    def env(self):
        return {"SNS_TOPIC_ARNS": TOPIC, "SNS_CERT_HOSTS": self.base}

    def answer(self, req, method, raw):
        path = urllib.parse.urlsplit(req.path)
        if method == "GET" and path.path == "/cert.pem":
            self.record(kind="cert")
            return 200, self.cert, [("Content-Type", "application/x-pem-file")]
        if method == "GET" and path.path == "/confirm":
            self.record(kind="confirm", token=urllib.parse.parse_qs(path.query)["Token"][0])
            return 200, b"<ConfirmSubscriptionResponse/>", [("Content-Type", "text/xml")]
        return 404, {"error": "no such endpoint"}, []

    def sign(self, m, version="1", key=None):
        """Adds SignatureVersion, SigningCertURL and Signature to message `m`."""
        m.setdefault("SigningCertURL", f"{self.base}/cert.pem")
        m["SignatureVersion"] = version
        h = hashes.SHA1() if version == "1" else hashes.SHA256()
        sig = (key or self.key).sign(string_to_sign(m).encode(), padding.PKCS1v15(), h)
        m["Signature"] = base64.b64encode(sig).decode()
        return m

    def message(self, type_, **fields):
        m = {"Type": type_, "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
             "Timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        m.update(fields)
        return m

    def post(self, url, m):
        """POSTs SNS message `m` the way SNS does (JSON sent as text/plain)."""
        return requests.post(url, data=json.dumps(m).encode(), timeout=30, headers={
            "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": m["Type"],
            "x-amz-sns-message-id": m["MessageId"], "x-amz-sns-topic-arn": m["TopicArn"]})

    def subscription(self):
        token = secrets.token_hex(32)
        return self.sign(self.message("SubscriptionConfirmation", Token=token,
                                      Message=f"You have chosen to subscribe to the topic {TOPIC}.",
                                      SubscribeURL=f"{self.base}/confirm?Action=ConfirmSubscription&Token={token}"))

    def ses(self, kind, message_id, to, version="1", **extra):
        """A signed Notification carrying an SES event of `kind` (Bounce, Complaint, Delivery)
        about the mail sent with Message-ID `message_id` to `to`."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        ses = {"notificationType": kind,
               "mail": {"timestamp": now, "source": "chat@example.test", "messageId": "0102" + secrets.token_hex(20),
                        "destination": [to], "commonHeaders": {"messageId": message_id, "to": [to]}}}
        if kind == "Bounce":
            ses["bounce"] = {"bounceType": extra.get("bounce_type", "Permanent"), "bounceSubType": "General",
                             "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": "5.1.1",
                                                    "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                             "timestamp": now, "feedbackId": secrets.token_hex(8)}
        elif kind == "Complaint":
            ses["complaint"] = {"complainedRecipients": [{"emailAddress": to}], "timestamp": now,
                                "feedbackId": secrets.token_hex(8), "complaintFeedbackType": "abuse"}
        else:
            ses["delivery"] = {"timestamp": now, "recipients": [to], "processingTimeMillis": 512,
                               "smtpResponse": "250 2.6.0 Message received"}
        return self.sign(self.message("Notification", Message=json.dumps(ses)), version)
