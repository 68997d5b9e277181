"""Delivery receipts end to end (issue 10: "delivered where the provider says so", "bounced"):
after the provider accepted a delivery, the tenant's backend relays its provider's report
(`POST /v1/notifications/deliveries/{id}/status`, tenant_admin) and the recipient's app may
confirm it displayed a push; both are recorded on the delivery (GET
/v1/notifications/{id}/deliveries) and explained by the diagnostics. The deliveries here are
web pushes to the local push service of test_notification_webpush."""

import time

import pytest

from chat import create, ok, problem, send
from conftest import new_tenant, token_for
from test_notification_webpush import deliveries, pushsvc, register  # noqa: F401 (fixture)
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
