"""The notification service end to end: messaging events (real Kafka) become in-app
notifications per recipient, readable through the gateway, published as notification.created,
and stored once per (event, user, channel) even when the service is killed mid-batch."""

import signal
import time

import pytest
import requests

from chat import create, ok, problem, send, validate_event
from conftest import PORTS, read_events, token_for

NOTIF = f"http://127.0.0.1:{PORTS['notification']}"


def inbox(api, token, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return ok(api.call("GET", "/v1/notifications" + (f"?{q}" if q else ""), token))


def wait_inbox(api, token, pred, timeout=30.0):
    """Polls the user's inbox until pred(items) holds; returns the items."""
    deadline = time.time() + timeout
    while True:
        items = inbox(api, token, limit=100)["items"]
        if pred(items):
            return items
        assert time.time() < deadline, f"inbox never matched; last: {items}"
        time.sleep(0.2)


def unread(api, token):
    return ok(api.call("GET", "/v1/notifications/unread_count", token))["unread"]


@pytest.fixture
def trio(api, tenant):
    toks = {u: token_for(api, tenant, u) for u in ("ann", "bob", "cat")}
    return tenant, toks


def test_members_are_notified_by_type_and_the_sender_is_not(api, trio):
    tenant, t = trio
    since = int(time.time() * 1000) - 1000
    conv = create(api, t["ann"], "group", ["bob", "cat"], title="plans")
    cid = conv["id"]
    # Being put in a conversation by someone else is a notification; creating it is not.
    for u in ("bob", "cat"):
        items = wait_inbox(api, t[u], lambda i: any(n["type"] == "added" for n in i))
        added = [n for n in items if n["type"] == "added"]
        assert len(added) == 1 and added[0]["conversation_id"] == cid
        assert added[0]["actor_id"] == "ann" and added[0]["text"] == "plans"
    m1 = ok(send(api, t["ann"], cid, "hello @bob", mentions=["bob"]))
    m2 = ok(send(api, t["cat"], cid, "answering ann", reply_to=m1["id"]))
    bob = wait_inbox(api, t["bob"], lambda i: sum(n.get("message_id") in (m1["id"], m2["id"]) for n in i) == 2)
    by_msg = {n.get("message_id"): n for n in bob}
    assert by_msg[m1["id"]]["type"] == "mention" and by_msg[m1["id"]]["actor_id"] == "ann"
    assert by_msg[m1["id"]]["text"] == "hello @bob" and by_msg[m1["id"]]["read"] is False
    assert by_msg[m2["id"]]["type"] == "message"
    cat = wait_inbox(api, t["cat"], lambda i: any(n.get("message_id") == m1["id"] for n in i))
    assert [n["type"] for n in cat if n.get("message_id") == m1["id"]] == ["message"]
    assert not any(n.get("message_id") == m2["id"] for n in cat)  # her own message
    ann = wait_inbox(api, t["ann"], lambda i: any(n.get("message_id") == m2["id"] for n in i))
    assert [n["type"] for n in ann if n.get("message_id") == m2["id"]] == ["reply"]
    assert not any(n.get("message_id") == m1["id"] for n in ann)
    # Each new one is published on the notifications topic, keyed by its user, per schema.
    ids = {n["id"] for n in bob + cat + ann}
    events = read_events("notifications", lambda evs: ids <= {e["id"] for e in evs}, since)
    mine = [e for e in events if e["id"] in ids]
    assert {e["id"] for e in mine} == ids
    for e in mine:
        validate_event(e)
        assert e["type"] == "notification.created" and e["tenant"] == tenant["id"]
        assert e["_key"] == e["subject"] == e["data"]["user_id"]


def test_unread_count_mark_read_and_pages(api, trio):
    _, t = trio
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    sent = [ok(send(api, t["ann"], cid, f"m{i}"))["id"] for i in range(5)]
    wait_inbox(api, t["bob"], lambda i: {n.get("message_id") for n in i} >= set(sent))
    assert unread(api, t["bob"]) == 5  # a direct conversation: nobody was "added"
    # Newest first, in pages that follow each other without gap or repeat.
    page1 = inbox(api, t["bob"], limit=2)
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = inbox(api, t["bob"], limit=2, cursor=page1["next_cursor"])
    page3 = inbox(api, t["bob"], limit=2, cursor=page2["next_cursor"])
    assert page3["next_cursor"] is None
    order = [n["message_id"] for n in page1["items"] + page2["items"] + page3["items"]]
    assert order == list(reversed(sent))
    one = page1["items"][0]
    r = ok(api.call("POST", f"/v1/notifications/{one['id']}/read", t["bob"]))
    assert r["read"] is True and r["read_at"]
    again = ok(api.call("POST", f"/v1/notifications/{one['id']}/read", t["bob"]))
    assert again["read_at"] == r["read_at"]  # idempotent
    assert unread(api, t["bob"]) == 4
    assert [n["id"] for n in inbox(api, t["bob"], unread_only="true")["items"]] == \
        [n["id"] for n in page1["items"][1:] + page2["items"] + page3["items"]]
    # Somebody else's notification does not exist for ann; marking it changes nothing.
    problem(api.call("POST", f"/v1/notifications/{page1['items'][1]['id']}/read", t["ann"]), 404)
    assert unread(api, t["bob"]) == 4
    assert ok(api.call("POST", "/v1/notifications/read_all", t["bob"]))["marked"] == 4
    assert unread(api, t["bob"]) == 0
    assert ok(api.call("POST", "/v1/notifications/read_all", t["bob"]))["marked"] == 0


def test_bad_requests_are_refused_precisely(api, trio):
    _, t = trio
    problem(api.call("GET", "/v1/notifications?cursor=zzz", t["bob"]), 400, "cursor")
    problem(api.call("GET", "/v1/notifications?limit=x", t["bob"]), 400)
    problem(api.call("GET", "/v1/notifications?unread_only=maybe", t["bob"]), 400, "unread_only")
    problem(api.call("POST", "/v1/notifications/not-an-id/read", t["bob"]), 404)
    problem(api.call("GET", "/v1/notifications"), 401)
    # Straight to the service, a missing token is refused there too.
    r = requests.get(NOTIF + "/v1/notifications", timeout=10)
    assert r.status_code == 401


def test_another_tenant_sees_nothing(api, trio, tenant):
    _, t = trio
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "private"))["id"]
    wait_inbox(api, t["bob"], lambda i: any(n.get("message_id") == mid for n in i))
    from conftest import new_tenant
    other = new_tenant(api)
    bob2 = token_for(api, other, "bob")  # the same user id in another tenant
    assert not any(n.get("message_id") == mid for n in inbox(api, bob2, limit=100)["items"])


def test_a_kill_mid_batch_notifies_each_recipient_once(api, trio, platform):
    _, t = trio
    svc = platform["notification"]
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    wait_inbox(api, t["cat"], lambda i: any(n["type"] == "added" and n["conversation_id"] == cid for n in i))
    sent = [ok(send(api, t["ann"], cid, f"burst {i}"))["id"] for i in range(40)]
    # Kill it hard once it has handled part of the burst: offsets of what it handled are not
    # all committed (they are committed every few seconds), so it is consumed again.
    deadline = time.time() + 30
    while not any(n.get("message_id") in sent for n in inbox(api, t["cat"], limit=100)["items"]):
        assert time.time() < deadline
        time.sleep(0.05)
    assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
    svc.start()
    for u in ("bob", "cat"):
        items = wait_inbox(api, t[u], lambda i: set(sent) <= {n.get("message_id") for n in i},
                           timeout=60)
        got = [n["message_id"] for n in items if n.get("message_id") in sent]
        assert sorted(got) == sorted(sent), f"{u}: duplicates or gaps"


def test_every_route_and_event_is_documented():
    import re
    import yaml
    from conftest import ROOT
    openapi = yaml.safe_load((ROOT / "proto/openapi.yaml").read_text())
    main = (ROOT / "services/notification/main.c").read_text()
    routes = re.findall(r'cm_http_route\(srv, "([A-Z]+)", "([^"]+)"', main)
    assert len(routes) >= 4
    missing = [f"{m} {p}" for m, p in routes
               if p not in openapi["paths"] or m.lower() not in openapi["paths"][p]]
    assert not missing, f"routes missing from proto/openapi.yaml: {missing}"
    asyncapi = yaml.safe_load((ROOT / "proto/asyncapi.yaml").read_text())
    assert asyncapi["components"]["messages"]["notificationCreated"]["payload"]["$ref"] == \
        "./events/notification.created.schema.json"
