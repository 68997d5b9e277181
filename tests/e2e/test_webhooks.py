"""Webhooks to tenant URLs (notification service, issue 10): a tenant_admin registers endpoints
with an event filter and gets a secret once; matching events are POSTed with a Stripe-style
signature (`Chat-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`) that a
receiver verifies with Python's hmac; failing endpoints are retried, then disabled; and
outbound connections to private or loopback addresses are refused when connecting (a loopback
canary outside WEBHOOK_ALLOW_PRIVATE_CIDRS receives nothing)."""

import hashlib
import hmac
import json
import time

import pytest
import requests

from chat import create, ok, problem, send, validate_event
from conftest import PORTS, new_tenant, read_events, token_for
from recording_server import RecordingServer
from users_lib import server

NOTIF = f"http://127.0.0.1:{PORTS['notification']}"


class Receiver(RecordingServer):
    """Records every POST (path, headers, raw); /fail answers 500, anything else 200."""

    def __init__(self, host, port):
        super().__init__(host, port)
        self.start()

    def answer(self, req, method, raw):
        self.record(path=req.path, headers=dict(req.headers), raw=raw)
        return (500 if req.path == "/fail" else 200), b"{}", []

    def on(self, path):
        return self.matching(lambda g: g["path"] == path)

    def wait(self, path, pred, timeout=30.0):
        return self.wait_for(lambda g: g["path"] == path and pred(g), 1, timeout, f"{path}: matching")


@pytest.fixture(scope="module")
def hooks(platform):
    """A receiver on 127.0.0.1 (allowed by WEBHOOK_ALLOW_PRIVATE_CIDRS) and a canary on
    127.0.0.2 (loopback too, not allowed), and the notification service restarted to use
    short retry delays (two retries; the defaults are 1 s, 5 s, 30 s) and to disable an
    endpoint after 4 failures in a row (default 20)."""
    recv = Receiver("127.0.0.1", PORTS["notification"] + 4)
    canary = Receiver("127.0.0.2", PORTS["notification"] + 5)
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env.update({"WEBHOOK_ALLOW_PRIVATE_CIDRS": "127.0.0.1/32", "WEBHOOK_RETRY_DELAYS_MS": "200,400",
                    "WEBHOOK_DISABLE_AFTER": "4"})
    svc.start()
    yield recv, canary
    recv.stop()
    canary.stop()


def admin_of(api, tenant):
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    return token_for(api, tenant, "root")


def verify(secret, g):
    """The receiver's check, as a tenant would write it: recompute the HMAC of "<t>.<body>"."""
    parts = dict(p.split("=", 1) for p in g["headers"]["Chat-Signature"].split(","))
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + g["raw"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(want, parts["v1"]), "signature does not verify"
    assert abs(int(parts["t"]) - time.time()) < 300
    return json.loads(g["raw"])


def test_signed_filtered_and_never_to_a_private_address(api, tenant, hooks):
    recv, canary = hooks
    port, cport = PORTS["notification"] + 4, PORTS["notification"] + 5
    admin = admin_of(api, tenant)
    ann, bob = token_for(api, tenant, "ann"), token_for(api, tenant, "bob")
    # Who may, and what is refused.
    problem(api.call("POST", "/v1/webhooks", ann, {"url": f"http://127.0.0.1:{port}/ok", "events": ["message.created"]}), 403)
    problem(api.call("POST", "/v1/webhooks", admin, {"url": "ftp://example.com/x", "events": ["message.created"]}), 400, "url")
    problem(api.call("POST", "/v1/webhooks", admin, {"url": "http://example.com/x", "events": ["message.created", "nope"]}), 400, "events[1]")
    problem(api.call("POST", "/v1/webhooks", admin, {"url": "http://example.com/x", "events": []}), 400, "events")
    problem(api.call("POST", "/v1/webhooks", admin, {"url": "http://example.com/x", "events": ["message.created"], "x": 1}), 400, "x")
    r = api.call("POST", "/v1/webhooks", admin, {"url": f"http://127.0.0.1:{port}/ok", "events": ["message.created"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["secret"].startswith("whsec_") and r.headers["Location"] == f"/v1/webhooks/{hook['id']}"
    assert hook["enabled"] is True and hook["events"] == ["message.created"]
    can = ok(api.call("POST", "/v1/webhooks", admin, {"url": f"http://127.0.0.2:{cport}/hook",
                                                       "events": ["message.created", "notification.created"]}), 201)
    listed = ok(api.call("GET", "/v1/webhooks", admin))["items"]
    assert {h["id"] for h in listed} == {hook["id"], can["id"]} and not any("secret" in h for h in listed)
    # Another tenant sees none of them and cannot delete them.
    other = admin_of(api, new_tenant(api))
    assert ok(api.call("GET", "/v1/webhooks", other))["items"] == []
    problem(api.call("DELETE", f"/v1/webhooks/{hook['id']}", other), 404)
    # A message: its message.created is POSTed, signed; the notification.created it causes is
    # not (not in the filter).
    cid = create(api, ann, "direct", ["bob"])["id"]
    m = ok(send(api, ann, cid, "hello hooks"))
    got = recv.wait("/ok", lambda g: json.loads(g["raw"]).get("data", {}).get("id") == m["id"])
    assert len(got) == 1
    ev = verify(hook["secret"], got[0])
    assert ev["type"] == "message.created" and ev["tenant"] == tenant["id"] and ev["data"]["text"] == "hello hooks"
    assert got[0]["headers"]["Chat-Event-Type"] == "message.created"
    # A tampered body does not verify.
    with pytest.raises(AssertionError):
        verify(hook["secret"], {**got[0], "raw": got[0]["raw"].replace(b"hello", b"HELLO")})
    # bob's notification.created exists, yet only message.created reached the receiver.
    deadline = time.time() + 20
    while not ok(api.call("GET", "/v1/notifications", bob))["items"]:
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(2)
    assert {json.loads(g["raw"])["type"] for g in recv.on("/ok")} == {"message.created"}
    # The canary listens on loopback outside the allowed CIDRs: refused at connect time.
    assert canary.requests == []
    metrics = requests.get(NOTIF + "/metrics", timeout=10).text
    refused = [line for line in metrics.splitlines() if line.startswith("notification_webhook_refused_total")]
    assert refused and int(refused[0].split()[1]) >= 1
    assert api.call("DELETE", f"/v1/webhooks/{hook['id']}", admin).status_code == 204
    assert [h["id"] for h in ok(api.call("GET", "/v1/webhooks", admin))["items"]] == [can["id"]]


def test_a_failing_endpoint_is_retried_dead_lettered_then_disabled(api, tenant, hooks):
    recv, _ = hooks
    port = PORTS["notification"] + 4
    since = int(time.time() * 1000) - 1000
    admin = admin_of(api, tenant)
    ann = token_for(api, tenant, "ann")
    hook = ok(api.call("POST", "/v1/webhooks", admin, {"url": f"http://127.0.0.1:{port}/fail",
                                                        "events": ["message.created"]}), 201)
    cid = create(api, ann, "direct", ["bob"])["id"]
    m = ok(send(api, ann, cid, "anyone there?"))["id"]
    about = lambda mid: (lambda g: json.loads(g["raw"])["data"].get("id") == mid)
    # Attempt 1 and retries after 0.2 s and 0.4 s (+-20 %), then the DLQ.
    deadline = time.time() + 30
    while len([g for g in recv.on("/fail") if about(m)(g)]) < 3:
        assert time.time() < deadline, recv.on("/fail")
        time.sleep(0.05)
    tries = [g for g in recv.on("/fail") if about(m)(g)]
    for g in tries:
        verify(hook["secret"], g)
    assert len({g["headers"]["Chat-Webhook-Id"] for g in tries}) == 1  # one delivery, three attempts
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    for gap, want in zip(gaps, (0.2, 0.4)):
        assert want * 0.75 <= gap <= want * 1.2 + 1.0, gaps
    events = read_events("notifications.dlq", lambda evs: any(
        e["type"] == "webhook.failed" and e["data"]["endpoint_id"] == hook["id"] for e in evs), since)
    ev = next(e for e in events if e["type"] == "webhook.failed" and e["data"]["endpoint_id"] == hook["id"])
    validate_event(ev)
    assert ev["data"]["attempts"] == 3 and ev["data"]["event_type"] == "message.created" and ev["_key"] == hook["id"]
    time.sleep(1)
    assert len([g for g in recv.on("/fail") if about(m)(g)]) == 3  # given up: no fourth
    h = next(x for x in ok(api.call("GET", "/v1/webhooks", admin))["items"] if x["id"] == hook["id"])
    assert h["enabled"] is True and h["consecutive_failures"] == 3
    # The fourth failure in a row (WEBHOOK_DISABLE_AFTER=4) disables it: no retry follows.
    m2 = ok(send(api, ann, cid, "still nobody?"))["id"]
    recv.wait("/fail", about(m2))
    deadline = time.time() + 10
    while True:
        h = next(x for x in ok(api.call("GET", "/v1/webhooks", admin))["items"] if x["id"] == hook["id"])
        if not h["enabled"]:
            break
        assert time.time() < deadline, h
        time.sleep(0.1)
    assert "4 consecutive" in h["disabled_reason"]
    m3 = ok(send(api, ann, cid, "hello?"))["id"]
    time.sleep(2)
    assert len([g for g in recv.on("/fail") if about(m2)(g)]) == 1
    assert not [g for g in recv.on("/fail") if about(m3)(g)]
