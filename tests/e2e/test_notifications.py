"""The notification service end to end: messaging events (real Kafka) become in-app
notifications per recipient, readable through the gateway, published as notification.created,
and stored once per (event, user, channel) even when the service is killed mid-batch; offline
recipients are pushed to FCM and APNs (local stand-ins that check credentials, record and fail
on demand), online ones are not; provider failures are retried then dead-lettered; dead tokens
are pruned; and the diagnostics say why someone was or was not pushed to."""

import secrets
import signal
import time

import pytest
import requests
from websockets.sync.client import connect as ws_connect

from chat import create, ok, problem, send, validate_event
from conftest import PORTS, new_tenant, read_events, token_for
from push_provider import Provider
from socket_util import socket_instance, ws_url

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


def test_an_erased_user_leaves_nothing_here(api, trio):
    """user.deleted (the tenant's backend erases bob through the user service): his
    notifications, devices, preferences and memberships go; the others' stay."""
    import pymongo
    from conftest import DBS, MONGO_URI
    from users_lib import server
    tenant, t = trio
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    m = ok(send(api, t["ann"], cid, "before bob goes"))
    for u in ("bob", "cat"):
        wait_inbox(api, t[u], lambda i: any(n.get("message_id") == m["id"] for n in i))
    device(api, t["bob"], "fcm", "bob-token-" + secrets.token_hex(8))
    ok(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"types": {"message": {"push": False}}}))
    db = pymongo.MongoClient(MONGO_URI)[DBS["notification"]]
    ddb = pymongo.MongoClient(MONGO_URI)[DBS["notification_deliveries"]]
    mine = {"tenant": tenant["id"], "user_id": "bob"}
    assert db.notifications.count_documents(mine) > 0 and db.devices.count_documents(mine) == 1
    r = server(api, tenant, "DELETE", "/v1/server/users/bob")
    assert r.status_code == 204, r.text
    deadline = time.time() + 30
    left = None
    while time.time() < deadline:
        left = {c: db[c].count_documents(mine)
                for c in ("notifications", "devices", "preferences", "members", "decisions")}
        left["deliveries"] = ddb.deliveries.count_documents(mine)
        if not any(left.values()):
            break
        time.sleep(0.3)
    assert not any(left.values()), left
    assert any(n.get("message_id") == m["id"] for n in inbox(api, t["cat"], limit=100)["items"])


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
    assert asyncapi["components"]["messages"]["notificationDelivered"]["payload"]["$ref"] == \
        "./events/notification.delivered.schema.json"


def test_the_diagnostics_decision_enum_is_what_the_code_records():
    """Every decision string the code records (nf_decision, the push planner's decide, the
    senders' `decision = "..."`) and every one the diagnostics explain is in the
    NotificationDiagnostics enum, and the enum has nothing else."""
    import re
    import yaml
    from conftest import ROOT
    openapi = yaml.safe_load((ROOT / "proto/openapi.yaml").read_text())
    recorded, explained = set(), set()
    for f in sorted((ROOT / "services/notification").glob("*.c")):
        src = f.read_text()
        for arg in re.findall(r'(?:nf_decision|decide)\(\s*[^,()]+,\s*[^,()]+,\s*([^,]+),', src):
            recorded |= set(re.findall(r'"(\w+)"', arg))
        recorded |= set(re.findall(r'\bdecision = "(\w+)"', src))
        for fn in ("static const char *explain(const char *decision)",
                   "const char *nf_channel_explain(const char *channel, const char *decision)"):
            if fn in src:
                body = src[src.index(fn):]
                body = body[:body.index("\n}\n")]
                explained |= set(re.findall(r'\{"(\w+)", "', body))
    assert {"preference", "rate_limited", "escalated_email", "no_address"} <= recorded  # the scan works
    enum = openapi["components"]["schemas"]["NotificationDiagnostics"]["properties"]["decisions"]["items"][
        "properties"]["decision"]["enum"]
    assert recorded <= explained, f"recorded but not explained: {recorded - explained}"
    assert set(enum) == explained, (f"missing from the enum: {explained - set(enum)}; "
                                    f"in the enum but never recorded: {set(enum) - explained}")


# --- push ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def provider(platform, tmp_path_factory):
    """The local FCM/APNs endpoint on base+14, and the notification service restarted to use
    it, with short retry delays (the defaults are 1 s, 5 s, 30 s)."""
    prov = Provider(PORTS["notification"] + 1, tmp_path_factory.mktemp("push")).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env.update(prov.env())
    svc.env["PUSH_RETRY_DELAYS_MS"] = "300,600,900"
    svc.start()
    yield prov
    prov.stop()


@pytest.fixture(scope="module")
def socket_1(platform):
    s = socket_instance(0, PRESENCE_BATCH_MS="100")
    s.start()
    yield s
    assert s.stop() == 0


def device(api, token, platform_, tok, **kw):
    return ok(api.call("POST", "/v1/devices", token, {"platform": platform_, "token": tok, **kw}), 200, 201)


def diagnose(api, token, user, mid, timeout=20.0, until=None):
    deadline = time.time() + timeout
    while True:
        d = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id={user}&message_id={mid}", token))
        got = [x["decision"] for x in d["decisions"]]
        if until is None or until(got):
            return d
        assert time.time() < deadline, d
        time.sleep(0.1)


def notification_of(api, token, mid):
    items = wait_inbox(api, token, lambda i: any(n.get("message_id") == mid for n in i))
    return next(n for n in items if n.get("message_id") == mid)


def test_devices_are_registered_once_and_checked(api, trio, provider):
    _, t = trio
    tok = "fcm-" + secrets.token_hex(16)
    r = api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": tok, "app_id": "com.example.chat"})
    assert r.status_code == 201, r.text
    dev = r.json()
    assert dev["platform"] == "fcm" and dev["token"] == tok and r.headers["Location"] == f"/v1/devices/{dev['id']}"
    again = api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": tok})
    assert again.status_code == 200 and again.json()["id"] == dev["id"]
    assert [d["id"] for d in ok(api.call("GET", "/v1/devices", t["bob"]))["items"]] == [dev["id"]]
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "sms", "token": "x"}), 400, "platform")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": "a b"}), 400, "token")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": "t", "x": 1}), 400, "x")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "apns", "token": "t", "app_id": "a/b"}), 400, "app_id")
    problem(api.call("POST", "/v1/devices", t["bob"], {"token": "t"}), 400, "platform")
    # Another user cannot delete it, nor see it; its owner can.
    problem(api.call("DELETE", f"/v1/devices/{dev['id']}", t["ann"]), 404)
    assert ok(api.call("GET", "/v1/devices", t["ann"]))["items"] == []
    assert api.call("DELETE", f"/v1/devices/{dev['id']}", t["bob"]).status_code == 204
    assert ok(api.call("GET", "/v1/devices", t["bob"]))["items"] == []


def test_offline_recipients_are_pushed_and_online_ones_are_not(api, trio, provider, socket_1):
    tenant, t = trio
    fcm_tok = "fcm-" + secrets.token_hex(16)
    apns_tok = secrets.token_hex(32)
    device(api, t["bob"], "fcm", fcm_tok)
    device(api, t["cat"], "apns", apns_tok, app_id="com.example.chat.ios")
    cid = create(api, t["ann"], "group", ["bob", "cat"], title="push")["id"]
    with ws_connect(ws_url(0, t["cat"])) as ws:
        # cat is online: her live connection is in Redis before the message is sent.
        deadline = time.time() + 10
        while requests.get(f"http://127.0.0.1:{PORTS['socket'] + 3}/v1/users/cat/presence",
                           headers={"Authorization": f"Bearer {t['ann']}"}, timeout=5).json().get("status") != "online":
            assert time.time() < deadline
            time.sleep(0.05)
        m1 = ok(send(api, t["ann"], cid, "lunch at noon, @bob?", mentions=["bob"]))
        bob_n = notification_of(api, t["bob"], m1["id"])
        sent = provider.wait_message(fcm_tok, m1["id"])
        assert len(sent) == 1
        msg = sent[0]["body"]["message"]
        assert msg["notification"] == {"title": "ann mentioned you", "body": "lunch at noon, @bob?"}
        assert msg["data"] == {"notification_id": bob_n["id"], "type": "mention", "conversation_id": cid,
                               "message_id": m1["id"], "actor_id": "ann"}
        assert sent[0]["headers"]["Authorization"].startswith("Bearer ya29.e2e-")
        cat_d = diagnose(api, t["cat"], "cat", m1["id"], until=lambda g: "online" in g)
        assert [x["decision"] for x in cat_d["decisions"]] == ["online"]
        assert cat_d["in_app"]["type"] == "message"
        ws.close()
    assert not provider.sends_of(apns_tok, m1["id"])
    # Once her connection is gone she is pushed to, over APNs with a provider token.
    deadline = time.time() + 10
    while requests.get(f"http://127.0.0.1:{PORTS['socket'] + 3}/v1/users/cat/presence",
                       headers={"Authorization": f"Bearer {t['ann']}"}, timeout=5).json().get("status") != "offline":
        assert time.time() < deadline
        time.sleep(0.05)
    m2 = ok(send(api, t["ann"], cid, "still there?"))
    got = provider.wait_message(apns_tok, m2["id"])
    assert len(got) == 1
    assert got[0]["headers"]["apns-topic"] == "com.example.chat.ios"
    assert got[0]["headers"]["apns-push-type"] == "alert"
    assert got[0]["body"]["aps"]["alert"] == {"title": "ann", "body": "still there?"}
    # The delivery records the attempt; the diagnostics say it was sent.
    cat_n = notification_of(api, t["cat"], m2["id"])
    diagnose(api, t["cat"], "cat", m2["id"], until=lambda g: "sent" in g)
    dl = ok(api.call("GET", f"/v1/notifications/{cat_n['id']}/deliveries", t["cat"]))["items"]
    assert len(dl) == 1 and dl[0]["state"] == "sent" and dl[0]["platform"] == "apns"
    assert [(a["attempt"], a["outcome"], a["status"]) for a in dl[0]["attempts"]] == [(1, "sent", 200)]
    # Someone else's deliveries and diagnostics are not theirs to read.
    problem(api.call("GET", f"/v1/notifications/{cat_n['id']}/deliveries", t["bob"]), 404)
    problem(api.call("GET", f"/v1/notifications/diagnostics?user_id=cat&message_id={m2['id']}", t["bob"]), 403)


def test_provider_failures_are_retried_then_dead_lettered_and_redriven(api, trio, provider):
    tenant, t = trio
    since = int(time.time() * 1000) - 1000
    tok = "fcm-" + secrets.token_hex(16)
    provider.fail[tok] = "500"
    device(api, t["bob"], "fcm", tok)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "are you getting these?"))["id"]
    n = notification_of(api, t["bob"], mid)
    # One attempt and three retries (0.3 s, 0.6 s, 0.9 s here, +-20 %), then the DLQ.
    sends = provider.wait_sends(tok, 4)
    d = diagnose(api, t["bob"], "bob", mid, until=lambda g: "provider_error" in g)
    assert [x["decision"] for x in d["decisions"]] == ["queued", "provider_error"]
    gaps = [b["at"] - a["at"] for a, b in zip(sends, sends[1:])]
    for gap, want in zip(gaps, (0.3, 0.6, 0.9)):
        assert want * 0.75 <= gap <= want * 1.2 + 1.0, gaps
    dl = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"]
    assert dl[0]["state"] == "dead_lettered"
    assert [(a["outcome"], a["status"]) for a in dl[0]["attempts"]] == [("provider_error", 500)] * 4
    time.sleep(1.5)
    assert len(provider.sends(tok)) == 4  # given up: no fifth attempt
    events = read_events("notifications.dlq", lambda evs: any(e["data"].get("delivery_id") == dl[0]["id"] for e in evs), since)
    ev = next(e for e in events if e["data"].get("delivery_id") == dl[0]["id"])
    validate_event(ev)
    assert ev["type"] == "notification.failed" and ev["data"]["attempts"] == 4 and ev["_key"] == "bob"
    # A member may not redrive; a tenant_admin may, once the provider is back.
    problem(api.call("POST", f"/v1/notifications/deliveries/{dl[0]['id']}/redrive", t["bob"]), 403)
    from users_lib import server
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    admin = token_for(api, tenant, "root")
    del provider.fail[tok]
    r = ok(api.call("POST", f"/v1/notifications/deliveries/{dl[0]['id']}/redrive", admin), 202)
    assert r["state"] in ("queued", "sent")  # the sender may already have taken it
    assert [a["outcome"] for a in r["attempts"]][4] == "redriven"
    provider.wait_sends(tok, 5)
    deadline = time.time() + 10
    while ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", admin))["items"][0]["state"] != "sent":
        assert time.time() < deadline
        time.sleep(0.1)
    final = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", admin))["items"][0]
    assert [(a["attempt"], a["outcome"]) for a in final["attempts"]][4:] == [(0, "redriven"), (1, "sent")]
    problem(api.call("POST", f"/v1/notifications/deliveries/{dl[0]['id']}/redrive", admin), 409, "sent")


def test_a_dead_token_is_pruned_and_explained(api, trio, provider):
    _, t = trio
    dead, live = "fcm-" + secrets.token_hex(16), "fcm-" + secrets.token_hex(16)
    provider.fail[dead] = "dead"
    d_dead = device(api, t["bob"], "fcm", dead)
    d_live = device(api, t["bob"], "fcm", live)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "one of your phones is gone"))["id"]
    provider.wait_message(dead, mid)
    provider.wait_message(live, mid)
    d = diagnose(api, t["bob"], "bob", mid, until=lambda g: "dead_token" in g and "sent" in g)
    by = {(x["decision"], x.get("device_id")) for x in d["decisions"]}
    assert ("dead_token", d_dead["id"]) in by and ("sent", d_live["id"]) in by
    assert [x["id"] for x in ok(api.call("GET", "/v1/devices", t["bob"]))["items"]] == [d_live["id"]]
    # The next message goes to the live device only.
    mid2 = ok(send(api, t["ann"], cid, "again"))["id"]
    provider.wait_message(live, mid2)
    time.sleep(0.5)
    assert not provider.sends_of(dead, mid2)


def test_a_deleted_or_moved_device_is_not_pushed_to(api, trio, provider):
    """The devices the consumer pushes to come from a cache the device endpoints write
    through: a device deleted, or whose token moved to another user, is pushed to no more."""
    _, t = trio
    gone, moved, kept = ("fcm-" + secrets.token_hex(16) for _ in range(3))
    d_gone = device(api, t["bob"], "fcm", gone)
    device(api, t["bob"], "fcm", moved)
    device(api, t["bob"], "fcm", kept)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    m1 = ok(send(api, t["ann"], cid, "three phones"))["id"]
    for tok in (gone, moved, kept):
        provider.wait_message(tok, m1)
    assert api.call("DELETE", f"/v1/devices/{d_gone['id']}", t["bob"]).status_code == 204
    assert device(api, t["cat"], "fcm", moved)["id"]  # the phone now belongs to cat
    m2 = ok(send(api, t["ann"], cid, "two of them are not yours any more"))["id"]
    provider.wait_message(kept, m2)
    time.sleep(0.5)
    assert not provider.sends_of(gone, m2) and not provider.sends_of(moved, m2)
    d = diagnose(api, t["bob"], "bob", m2, until=lambda g: "sent" in g)
    assert [x["decision"] for x in d["decisions"]] == ["queued", "sent"]


def test_a_retry_left_by_a_kill_goes_out_at_its_time_after_the_restart(api, trio, provider, platform):
    """A retry is a timer in the sender's memory over a delivery stored queued: a process
    killed before it falls due leaves it to the next one, which reads the queued deliveries
    at start and sends it when due (not after a lease of a minute), once."""
    _, t = trio
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env["PUSH_RETRY_DELAYS_MS"] = "4000,4000,4000"
    svc.start()
    tok = "fcm-" + secrets.token_hex(16)
    try:
        provider.fail[tok] = "500"
        device(api, t["bob"], "fcm", tok)
        cid = create(api, t["ann"], "direct", ["bob"])["id"]
        mid = ok(send(api, t["ann"], cid, "are you there after the crash?"))["id"]
        n = notification_of(api, t["bob"], mid)
        first = provider.wait_sends(tok, 1, timeout=60)[0]
        deadline = time.time() + 30
        while True:
            dl = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"]
            if dl and dl[0]["attempts"]:
                break
            assert time.time() < deadline, dl
            time.sleep(0.05)
        assert dl[0]["state"] == "queued" and [a["outcome"] for a in dl[0]["attempts"]] == ["provider_error"]
        assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
        del provider.fail[tok]
        svc.start()
        sends = provider.wait_sends(tok, 2, timeout=60)
        # Due 4 s (+-20 %) after the first attempt: never before; after it, as soon as the new
        # process has read the queued deliveries (seconds on a loaded store), well before the
        # minute a lease would have made it wait.
        assert 3.2 <= sends[1]["at"] - first["at"] <= 30, sends
        time.sleep(1.0)
        assert len(provider.sends(tok)) == 2
        final = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"][0]
        assert final["state"] == "sent"
        assert [(a["attempt"], a["outcome"]) for a in final["attempts"]] == [(1, "provider_error"), (2, "sent")]
    finally:
        provider.fail.pop(tok, None)
        svc.stop()
        svc.env["PUSH_RETRY_DELAYS_MS"] = "300,600,900"
        svc.start()


def test_a_stop_held_by_a_hung_provider_ends_at_its_deadline_and_loses_nothing(api, trio, provider, platform):
    """STOP_DEADLINE_MS bounds the shutdown: a consumer waiting for a push that the provider
    holds (here 40 s, past the 20 s this harness, like an orchestrator, waits before killing)
    would keep the process alive; at the deadline it exits (code 1) without it, and since the
    batch's offsets were not stored, the next process consumes the event again and sends the
    push (at least once: the hung request may have reached the provider), with the in-app
    notification stored once."""
    _, t = trio
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env.update({"STOP_DEADLINE_MS": "2000", "PUSH_TIMEOUT_MS": "60000"})
    svc.start()
    tok = "fcm-" + secrets.token_hex(16)
    try:
        provider.fail[tok] = "stall"
        device(api, t["bob"], "fcm", tok)
        cid = create(api, t["ann"], "direct", ["bob"])["id"]
        mid = ok(send(api, t["ann"], cid, "held up at the provider"))["id"]
        provider.wait_message(tok, mid, 1, timeout=60)  # arrived, and held
        t0 = time.time()
        code = svc.stop()
        took = time.time() - t0
        assert code == 1 and took < 12, (code, took)
        del provider.fail[tok]
        svc.start()
        # The push's Redis lease (60 s, as long as PUSH_TIMEOUT_MS here) outlives the process
        # that was cut short: the new one sends it once the lease has run out.
        sends = provider.wait_message(tok, mid, 2, timeout=150)
        assert len(sends) == 2
        n = notification_of(api, t["bob"], mid)
        assert [x["id"] for x in inbox(api, t["bob"], limit=100)["items"] if x.get("message_id") == mid] == [n["id"]]
        deadline = time.time() + 30
        while True:
            dl = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"]
            if dl and dl[0]["state"] == "sent":
                break
            assert time.time() < deadline, dl
            time.sleep(0.1)
    finally:
        provider.fail.pop(tok, None)
        svc.stop()
        for k in ("STOP_DEADLINE_MS", "PUSH_TIMEOUT_MS"):
            svc.env.pop(k, None)
        svc.start()


def test_diagnostics_explain_mute_and_missing_devices(api, trio, provider):
    _, t = trio
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    device(api, t["bob"], "fcm", "fcm-" + secrets.token_hex(16))
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    ok(api.call("PATCH", f"/v1/conversations/{cid}/me", t["bob"], {"muted_until": until}))
    # The mute reaches the notification service as member.updated; a message after it is
    # then not pushed to bob. Wait for the projection by sending until one is explained.
    deadline = time.time() + 20
    while True:
        mid = ok(send(api, t["ann"], cid, "quiet please"))["id"]
        d = diagnose(api, t["bob"], "bob", mid, until=lambda g: g != [])
        if [x["decision"] for x in d["decisions"]] == ["muted"]:
            break
        assert time.time() < deadline, d
    assert "muted" in d["decisions"][0]["explanation"] and until[:16] in d["decisions"][0]["detail"]
    cat = diagnose(api, t["cat"], "cat", mid, until=lambda g: g != [])
    assert [x["decision"] for x in cat["decisions"]] == ["no_device"]
    assert "no registered device" in cat["decisions"][0]["explanation"]
    # ann sent it: nothing, and the summary says what that can mean.
    own = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id=ann&message_id={mid}", t["ann"]))
    assert own["in_app"] is None and own["decisions"] == [] and "sent the message" in own["summary"]
    problem(api.call("GET", "/v1/notifications/diagnostics?user_id=ann", t["ann"]), 400, "message_id")


# --- preferences and quiet hours -------------------------------------------------------------

def test_preferences_round_trip_and_refuse_bad_input(api, trio):
    _, t = trio
    got = ok(api.call("GET", "/v1/notifications/preferences", t["bob"]))
    assert got["quiet_hours"] is None
    assert got["types"]["mention"] == {"in_app": True, "push": True, "email": False, "sms": False} and set(got["types"]) == \
        {"mention", "reply", "message", "added", "custom"}
    want = {"types": {"message": {"push": False}},
            "quiet_hours": {"start": "22:30", "end": "07:00", "time_zone": "America/New_York"}}
    put = ok(api.call("PUT", "/v1/notifications/preferences", t["bob"], want))
    assert put["types"]["message"] == {"in_app": True, "push": False, "email": False, "sms": False}
    assert put["quiet_hours"] == want["quiet_hours"]
    assert ok(api.call("GET", "/v1/notifications/preferences", t["bob"])) == put
    assert ok(api.call("GET", "/v1/notifications/preferences", t["cat"]))["quiet_hours"] is None
    for body, part in (({"types": {"poke": {"push": False}}}, "poke"),
                       ({"types": {"message": {"fax": False}}}, "fax"),
                       ({"types": {"message": {"push": "no"}}}, "push"),
                       ({"quiet_hours": {"start": "7:00", "end": "08:00", "time_zone": "UTC"}}, "start"),
                       ({"quiet_hours": {"start": "24:00", "end": "08:00", "time_zone": "UTC"}}, "HH:MM"),
                       ({"quiet_hours": {"start": "08:00", "end": "08:00", "time_zone": "UTC"}}, "differ"),
                       ({"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Base"}}, "IANA"),
                       ({"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "../../etc/passwd"}}, "IANA"),
                       ({"quiet_hours": {"start": "22:00", "end": "07:00"}}, "time_zone"),
                       ({"mute": True}, "mute")):
        problem(api.call("PUT", "/v1/notifications/preferences", t["bob"], body), 400, part)
    assert ok(api.call("GET", "/v1/notifications/preferences", t["bob"])) == put  # unchanged


def test_push_and_in_app_follow_the_preferences(api, trio, provider):
    _, t = trio
    tok = "fcm-" + secrets.token_hex(16)
    device(api, t["bob"], "fcm", tok)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    ok(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"types": {"message": {"push": False}}}))
    m1 = ok(send(api, t["ann"], cid, "no push for this"))["id"]
    notification_of(api, t["bob"], m1)
    d = diagnose(api, t["bob"], "bob", m1, until=lambda g: g != [])
    assert [x["decision"] for x in d["decisions"]] == ["preference"]
    # In-app off, push on: pushed, but not in the inbox nor counted.
    ok(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"types": {"message": {"in_app": False}}}))
    before = unread(api, t["bob"])
    m2 = ok(send(api, t["ann"], cid, "push only"))["id"]
    provider.wait_message(tok, m2)
    assert not provider.sends_of(tok, m1)
    assert not any(n.get("message_id") == m2 for n in inbox(api, t["bob"], limit=100)["items"])
    assert unread(api, t["bob"]) == before
    d2 = diagnose(api, t["bob"], "bob", m2, until=lambda g: "sent" in g)
    assert d2["in_app"]["hidden"] is True


def test_quiet_hours_defer_the_push_to_their_end(api, trio, provider):
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo
    _, t = trio
    zone = ZoneInfo("Asia/Kolkata")  # UTC+05:30: the half hour shows the zone is applied
    now = datetime.now(timezone.utc)
    end_utc = (now + timedelta(seconds=80)).replace(second=0, microsecond=0)
    if end_utc - now < timedelta(seconds=25):
        end_utc += timedelta(minutes=1)
    start = (now - timedelta(hours=1)).astimezone(zone).strftime("%H:%M")
    end = end_utc.astimezone(zone).strftime("%H:%M")
    tok = "fcm-" + secrets.token_hex(16)
    device(api, t["bob"], "fcm", tok)
    ok(api.call("PUT", "/v1/notifications/preferences", t["bob"],
                {"quiet_hours": {"start": start, "end": end, "time_zone": "Asia/Kolkata"}}))
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "tomorrow is fine"))["id"]
    d = diagnose(api, t["bob"], "bob", mid, until=lambda g: g != [])
    assert [x["decision"] for x in d["decisions"]] == ["quiet_hours"]
    assert end_utc.strftime("%Y-%m-%dT%H:%M:00.000Z") in d["decisions"][0]["detail"]
    # Nothing before the end of the quiet hours; then it arrives (deferred, not dropped).
    while datetime.now(timezone.utc) < end_utc - timedelta(seconds=2):
        assert not provider.sends_of(tok, mid)
        time.sleep(0.5)
    sent = provider.wait_message(tok, mid, timeout=30)
    assert sent[0]["at"] >= end_utc.timestamp() - 0.5


# --- custom notifications from the tenant's backend --------------------------------------------

def test_tenant_backend_notifies_many_users_in_batches_once_across_a_kill(api, trio, provider, platform):
    import pymongo
    from conftest import DBS, MONGO_URI
    from users_lib import server
    tenant, t = trio
    since = int(time.time() * 1000) - 1000
    server(api, tenant, "PUT", "/v1/server/users/backend", {"roles": ["tenant_admin"]})
    admin = token_for(api, tenant, "backend")
    tok = "fcm-" + secrets.token_hex(16)
    device(api, t["bob"], "fcm", tok)
    users = ["bob"] + [f"u{i:04d}" for i in range(1000)]  # 3 batches: 500, 500, 1
    body = {"user_ids": users, "title": "Maintenance tonight",
            "body": "Down from 02:00 to 03:00 UTC.", "data": {"kind": "maintenance"}}
    # Who may send, and what is refused, first.
    problem(api.call("POST", "/v1/notifications", t["ann"], body), 403, "tenant.manage")
    problem(api.call("POST", "/v1/notifications", admin, {**body, "user_ids": ["ok", "no way"]}), 400, "user_ids[1]")
    problem(api.call("POST", "/v1/notifications", admin, {**body, "user_ids": ["x"] * 10001}), 400, "10000")
    problem(api.call("POST", "/v1/notifications", admin, {**body, "data": {"n": 1}}), 400, "string")
    problem(api.call("POST", "/v1/notifications", admin, {**body, "title": ""}), 400, "title")
    r = ok(api.call("POST", "/v1/notifications", admin, body), 202)
    assert r["recipients"] == 1001 and r["batches"] == 3
    rid = r["id"]
    # Kill the service while it works through the batches, then let a new one finish.
    coll = pymongo.MongoClient(MONGO_URI)[DBS["notification"]]["notifications"]
    mine = {"tenant": tenant["id"], "event_id": {"$regex": f"^{rid}\\."}}
    deadline = time.time() + 60
    while coll.count_documents(mine) < 100:
        assert time.time() < deadline
        time.sleep(0.05)
    svc = platform["notification"]
    assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
    svc.start()
    deadline = time.time() + 120
    while coll.count_documents(mine) < 1001:
        assert time.time() < deadline, coll.count_documents(mine)
        time.sleep(0.5)
    time.sleep(2)  # any duplicate a replay would make has had time to appear
    per_user = list(coll.aggregate([{"$match": mine}, {"$group": {"_id": "$user_id", "n": {"$sum": 1}}}]))
    assert len(per_user) == 1001 and {p["n"] for p in per_user} == {1}
    n = notification_of_type(api, t["bob"], "custom")
    assert (n["title"], n["text"], n["data"]) == ("Maintenance tonight", "Down from 02:00 to 03:00 UTC.",
                                                  {"kind": "maintenance"})
    assert "conversation_id" not in n
    sent = [s for s in provider.sends(tok) if s["body"]["message"]["data"].get("notification_id") == n["id"]]
    deadline = time.time() + 20
    while not sent:
        assert time.time() < deadline
        time.sleep(0.1)
        sent = [s for s in provider.sends(tok) if s["body"]["message"]["data"].get("notification_id") == n["id"]]
    assert sent[0]["body"]["message"]["notification"] == {"title": "Maintenance tonight",
                                                          "body": "Down from 02:00 to 03:00 UTC."}
    events = read_events("notifications", lambda evs: sum(e["id"].startswith(rid) for e in evs) >= 3, since)
    batches = sorted((e for e in events if e["id"].startswith(rid + ".")), key=lambda e: e["data"]["batch"])
    assert [e["data"]["batch"] for e in batches][:3] == [0, 1, 2]
    assert [len(e["data"]["user_ids"]) for e in batches[:3]] == [500, 500, 1]
    for e in batches[:3]:
        validate_event(e)


def notification_of_type(api, token, type_):
    items = wait_inbox(api, token, lambda i: any(n["type"] == type_ for n in i))
    return next(n for n in items if n["type"] == type_)

