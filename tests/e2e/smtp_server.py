"""A real local SMTP server for the e-mail tests (aiosmtpd, the asyncio SMTP server): it
speaks SMTP over TCP as any mail relay does, keeps every message it accepts (parsed with the
standard library's e-mail parser), and refuses recipients on demand: a transient 451 (to be
retried) or a permanent 550."""

import email
import email.policy
import threading
import time

from aiosmtpd.controller import Controller


class Mailbox:
    def __init__(self, port):
        self.port = port
        self.url = f"smtp://127.0.0.1:{port}"
        self.lock = threading.Lock()
        self.messages = []  # dicts: to, from, msg (email.message.EmailMessage), raw, at
        self.attempts = []  # dicts: to, at, answer
        self.fail = {}      # recipient address -> "451" | "550"
        self.controller = Controller(self, hostname="127.0.0.1", port=port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            mode = self.fail.get(address)
            self.attempts.append({"to": address, "at": time.time(), "answer": mode or "250"})
        if mode == "451":
            return "451 4.3.0 Mailbox temporarily unavailable"
        if mode == "550":
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append({"to": rcpt, "from": envelope.mail_from, "msg": msg,
                                      "raw": envelope.content, "at": time.time()})
        return "250 Message accepted for delivery"

    def to(self, address):
        with self.lock:
            return [m for m in self.messages if m["to"] == address]

    def attempts_to(self, address):
        with self.lock:
            return [a for a in self.attempts if a["to"] == address]

    def wait(self, address, n=1, timeout=120.0, match=None):
        """Waits for `n` messages to `address` (those `match(m)` accepts); returns them."""
        deadline = time.time() + timeout
        while True:
            got = [m for m in self.to(address) if match is None or match(m)]
            if len(got) >= n:
                return got
            assert time.time() < deadline, f"{address}: {len(got)} messages, wanted {n}"
            time.sleep(0.05)


def bodies(msg):
    """The text/plain and text/html bodies of a parsed message (decoded), as a dict."""
    out = {}
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            out[part.get_content_type()] = part.get_content()
    return out
