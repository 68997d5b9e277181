"""Delivery receipts end to end (issue 10: "delivered where the provider says so", "bounced"):
after the provider accepted a delivery, the tenant's backend relays its provider's report
(`POST /v1/notifications/deliveries/{id}/status`, tenant_admin) and the recipient's app may
confirm it displayed a push; both are recorded on the delivery (GET
/v1/notifications/{id}/deliveries) and explained by the diagnostics. The deliveries here are
web pushes to the local push service of test_notification_webpush."""

import json
import time

import pytest

from chat import create, ok, problem, send, validate_event
from conftest import PORTS, new_tenant, token_for
from test_notification_webpush import deliveries, pushsvc, register  # noqa: F401 (fixture)
from test_webhooks import Receiver, verify
from users_lib import server


@pytest.fixture
def team(api):
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    return tenant, {u: token_for(api, tenant, u) for u in ("ann", "bob", "root")}


def status(api, token, did, body):
    return api.call("POST", f"/v1/notifications/deliveries/{did}/status", token, body)


def test_delivered_and_bounced_are_recorded_where_the_provider_says_so(api, pushsvc, team):
    push, _ = pushsvc
    _, t = team
    sub = push.subscribe()
    register(api, t["bob"], sub)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "did it arrive?"))["id"]
    n, dl = deliveries(api, t["bob"], mid, lambda d: d and d[0]["state"] == "sent")
    did = dl[0]["id"]
    # Bad reports change nothing.
    problem(status(api, t["root"], did, {"state": "read"}), 400, "state")
    problem(status(api, t["root"], did, {"state": "delivered", "x": 1}), 400, "x")
    problem(status(api, t["root"], did, {"state": "delivered", "detail": "d" * 301}), 400, "detail")
    problem(status(api, t["root"], did, {}), 400, "state")
    # Not the recipient, not the tenant's backend: nothing to see.
    problem(status(api, t["ann"], did, {"state": "delivered"}), 404)
    problem(status(api, t["root"], "no-such-delivery", {"state": "delivered"}), 404)
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    problem(status(api, token_for(api, other, "root"), did, {"state": "bounced"}), 404)
    # The recipient's app confirms it displayed the push; it may not report a bounce.
    problem(status(api, t["bob"], did, {"state": "bounced"}), 403, "delivered")
    assert ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"][0]["state"] == "sent"
    d = ok(status(api, t["bob"], did, {"state": "delivered"}))
    assert d["id"] == did and d["state"] == "delivered"
    assert [(a["attempt"], a["outcome"]) for a in d["attempts"]] == [(1, "sent"), (1, "delivered")]
    assert d["attempts"][1]["detail"] == "confirmed by the recipient"
    # A repeated report (providers retry callbacks) records nothing more.
    assert len(ok(status(api, t["bob"], did, {"state": "delivered"}))["attempts"]) == 2
    # Later the provider says it bounced after all (an asynchronous bounce); then it stays so.
    b = ok(status(api, t["root"], did, {"state": "bounced", "detail": "550 5.1.1 user unknown"}))
    assert b["state"] == "bounced" and b["attempts"][-1]["outcome"] == "bounced"
    assert b["attempts"][-1]["detail"] == "550 5.1.1 user unknown"
    problem(status(api, t["root"], did, {"state": "delivered"}), 409, "bounced")
    listed = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"][0]
    assert listed["state"] == "bounced" and [a["outcome"] for a in listed["attempts"]] == ["sent", "delivered", "bounced"]
    diag = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id=bob&message_id={mid}", t["root"]))
    got = {x["decision"]: x for x in diag["decisions"]}
    assert {"queued", "sent", "delivered", "bounced"} <= got.keys(), diag
    assert got["bounced"]["detail"] == "550 5.1.1 user unknown" and "bounced" in got["bounced"]["explanation"]
    assert got["delivered"]["device_id"] == dl[0]["device_id"]


def test_only_a_sent_delivery_can_be_delivered_or_bounced(api, pushsvc, team):
    push, _ = pushsvc
    _, t = team
    sub = push.subscribe()
    push.fail[sub.endpoint.rsplit("/", 1)[1]] = 410
    register(api, t["bob"], sub)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "gone"))["id"]
    _, dl = deliveries(api, t["bob"], mid, lambda d: d and d[0]["state"] == "failed")
    problem(status(api, t["root"], dl[0]["id"], {"state": "delivered"}), 409, "failed")
    problem(status(api, t["root"], dl[0]["id"], {"state": "bounced"}), 409, "failed")
    time.sleep(0.2)
    after = ok(api.call("GET", f"/v1/notifications/{dl[0]['notification_id']}/deliveries", t["bob"]))["items"][0]
    assert after["state"] == "failed" and len(after["attempts"]) == len(dl[0]["attempts"])


def test_a_webhook_subscribed_to_notification_delivered_receives_it_signed(api, pushsvc, team):
    """notification.delivered is an event type a webhook can filter on (the pushsvc fixture
    allows 127.0.0.1 as a webhook address): the recipient's confirmation reaches the tenant's
    endpoint, signed; the notification.created of the same message does not (not in the
    filter)."""
    push, _ = pushsvc
    tenant, t = team
    recv = Receiver("127.0.0.1", PORTS["notification"] + 6)
    try:
        hook = ok(api.call("POST", "/v1/webhooks", t["root"], {"url": f"http://127.0.0.1:{PORTS['notification'] + 6}/d",
                                                                "events": ["notification.delivered"]}), 201)
        assert hook["events"] == ["notification.delivered"]
        sub = push.subscribe()
        register(api, t["bob"], sub)
        cid = create(api, t["ann"], "direct", ["bob"])["id"]
        mid = ok(send(api, t["ann"], cid, "hooked?"))["id"]
        _, dl = deliveries(api, t["bob"], mid, lambda d: d and d[0]["state"] == "sent")
        did = dl[0]["id"]
        ok(status(api, t["bob"], did, {"state": "delivered"}))
        got = recv.wait("/d", lambda g: json.loads(g["raw"])["data"].get("delivery_id") == did)
        ev = verify(hook["secret"], got[0])
        validate_event(ev)
        assert ev["type"] == "notification.delivered" and ev["tenant"] == tenant["id"]
        assert ev["data"]["state"] == "delivered" and ev["data"]["message_id"] == mid
        assert got[0]["headers"]["Chat-Event-Type"] == "notification.delivered"
        time.sleep(1)
        assert {json.loads(g["raw"])["type"] for g in recv.on("/d")} == {"notification.delivered"}
    finally:
        recv.stop()
