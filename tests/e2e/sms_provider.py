"""A local stand-in for Twilio's Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json):
it checks HTTP Basic auth (account sid and auth token) and the form body the way Twilio does,
records every request, and answers per recipient number as told: accept (201), fail with
500, or refuse with 400 (21211, an invalid 'To'). Like Twilio, for an accepted message with a
StatusCallback it then POSTs the status reports there (`sent`, then the final one: `delivered`
by default, or what `outcome[number]` says), form-encoded and signed with X-Twilio-Signature
(https://www.twilio.com/docs/usage/security#validating-requests)."""

import base64
import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse

import requests

from recording_server import RecordingServer

SID = "AC" + "e2e0" * 8
TOKEN = "e2e-auth-token"
FROM = "+15005550006"


def twilio_signature(token, url, params):
    """base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value, sorted by name))."""
    data = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class SmsProvider(RecordingServer):
    def __init__(self, port):
        super().__init__("127.0.0.1", port)
        self.fail = {}     # number -> "500" | "400"
        self.outcome = {}  # number -> (MessageStatus, ErrorCode or None) | None (no report)

    def env(self):
        return {"SMS_BASE_URL": self.base, "SMS_ACCOUNT_SID": SID, "SMS_AUTH_TOKEN": TOKEN,
                "SMS_FROM": FROM}

    def to(self, number):
        return self.matching(lambda r: r.get("kind") == "sms" and r["to"] == number)

    def wait(self, number, n=1, timeout=120.0):
        return self.wait_for(lambda r: r.get("kind") == "sms" and r["to"] == number, n, timeout, number)

    def reports(self, sid):
        """The status callbacks made for message `sid`: dicts status, answer (HTTP status), body."""
        return self.matching(lambda r: r.get("kind") == "callback" and r["sid"] == sid)

    def _report(self, url, sid, number, status, error):
        params = {"AccountSid": SID, "MessageSid": sid, "SmsSid": sid, "SmsStatus": status,
                  "MessageStatus": status, "To": number, "From": FROM, "ApiVersion": "2010-04-01"}
        if error:
            params["ErrorCode"] = error
        # A report that finds nothing yet (the sender records the sid after our 201 arrives)
        # is tried again, as Twilio's connection overrides (#rc=) retry it.
        for _ in range(20):
            r = requests.post(url, data=params, timeout=10,
                              headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, params)})
            self.record(kind="callback", sid=sid, status=status, answer=r.status_code, body=r.text)
            if r.status_code != 404:
                return
            time.sleep(0.3)

    def _reports(self, url, sid, number):
        self._report(url, sid, number, "sent", None)
        final = self.outcome.get(number, ("delivered", None))
        if final:
            time.sleep(0.1)
            self._report(url, sid, number, *final)

    def answer(self, req, method, raw):
        if method != "POST" or req.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
            return 404, {"code": 20404, "message": "not found"}, []
        want = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if req.headers.get("Authorization") != want:
            return 401, {"code": 20003, "message": "Authenticate"}, []
        if req.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return 400, {"code": 20001, "message": "form expected"}, []
        form = urllib.parse.parse_qs(raw.decode(), strict_parsing=True)
        to, frm, body = form["To"][0], form["From"][0], form["Body"][0]
        callback = form.get("StatusCallback", [None])[0]
        sid = "SM" + secrets.token_hex(16)
        with self.lock:
            mode = self.fail.get(to)
        self.record(kind="sms", to=to, **{"from": frm}, body=body, callback=callback, sid=sid,
                    answer=mode or "201")
        if mode == "500":
            return 500, {"code": 20500, "message": "Internal Server Error"}, []
        if mode == "400":
            return 400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number."}, []
        if callback:
            threading.Thread(target=self._reports, args=(callback, sid, to), daemon=True).start()
        return 201, {"sid": sid, "status": "queued", "to": to, "from": frm, "body": body}, []
