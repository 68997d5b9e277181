"""Blocking through the gateway, honoured by the messaging service from the users topic: a
blocked user cannot open a direct conversation with the blocker or message them there; and
erasure: a deleted user's messages are anonymised or deleted per the tenant's policy."""

import json
import secrets
import time
import uuid

from confluent_kafka import Consumer, Producer

from conftest import ADMIN_KEY, KAFKA, assign_since, new_tenant, redis_cli, token_for
from users_lib import problem, server, wait_event


def eventually(check, timeout=20.0):
    """Polls `check` until it returns a true value (the messaging service learns from Kafka)."""
    deadline = time.time() + timeout
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.2)


def direct(api, token, other):
    return api.call("POST", "/v1/conversations", token, {"type": "direct", "members": [other]})


def send(api, token, cid, text):
    return api.call("POST", f"/v1/conversations/{cid}/messages", token, {"text": text})


def test_a_blocked_user_cannot_reach_the_blocker(api, tenant):
    t0 = int(time.time() * 1000) - 1000
    alice, bob = token_for(api, tenant, "alice"), token_for(api, tenant, "bob")
    cid = direct(api, alice, "bob").json()["id"]
    group = api.call("POST", "/v1/conversations", alice, {"type": "group", "members": ["bob"]}).json()["id"]
    assert send(api, alice, cid, "hi bob").status_code == 201

    assert api.call("PUT", "/v1/users/me/blocks/alice", bob).status_code == 204
    ev = wait_event(t0, lambda e: e["type"] == "user.blocked" and e["tenant"] == tenant["id"])
    assert ev["data"] == {"user_id": "bob", "blocked_id": "alice", "tenant_id": tenant["id"]} and ev["_key"] == "bob"
    r = eventually(lambda: (lambda r: r if r.status_code == 403 else None)(send(api, alice, cid, "hello?")))
    problem(r, 403, "does not accept your messages")
    problem(direct(api, alice, "bob"), 403)
    assert send(api, bob, cid, "I can still write").status_code == 201   # the blocker may
    assert send(api, alice, group, "groups are not affected").status_code == 201
    r = api.call("GET", "/v1/users/me/blocks", bob)
    assert [b["user_id"] for b in r.json()["items"]] == ["alice"] and r.json()["next_cursor"] is None

    assert api.call("DELETE", "/v1/users/me/blocks/alice", bob).status_code == 204
    assert eventually(lambda: send(api, alice, cid, "friends again").status_code == 201)
    assert direct(api, alice, "bob").status_code == 200
    wait_event(t0, lambda e: e["type"] == "user.unblocked" and e["tenant"] == tenant["id"])
    assert api.call("GET", "/v1/users/me/blocks", bob).json()["items"] == []


def test_an_old_block_event_produced_again_does_not_undo_an_unblock(api, tenant):
    """The user service's outbox may produce an event again, late: the newest decides."""
    t0 = int(time.time() * 1000) - 1000
    alice, bob = token_for(api, tenant, "alice"), token_for(api, tenant, "bob")
    cid = direct(api, alice, "bob").json()["id"]
    assert api.call("PUT", "/v1/users/me/blocks/alice", bob).status_code == 204
    assert eventually(lambda: send(api, alice, cid, "?").status_code == 403)
    assert api.call("DELETE", "/v1/users/me/blocks/alice", bob).status_code == 204
    assert eventually(lambda: send(api, alice, cid, "back").status_code == 201)
    old = wait_event(t0, lambda e: e["type"] == "user.blocked" and e["tenant"] == tenant["id"])
    p = Producer({"bootstrap.servers": KAFKA})
    p.produce("users", key="bob", value=json.dumps({k: v for k, v in old.items() if k != "_key"}).encode())
    assert p.flush(10) == 0
    time.sleep(3)  # the consumer has read it by now (it reads within a second)
    assert send(api, alice, cid, "still friends").status_code == 201


def test_user_events_stored_but_not_produced_are_produced_again(api, tenant):
    """A crash between storing an event and producing it: the outbox produces it later."""
    import pymongo
    from conftest import DBS, MONGO_URI
    t0 = int(time.time() * 1000) - 1000
    eid = str(uuid.uuid4())
    value = json.dumps({"specversion": "1.0", "id": eid, "type": "user.unblocked", "source": "/user",
                        "time": "2026-01-01T00:00:00.000Z", "subject": "zed", "datacontenttype": "application/json",
                        "tenant": tenant["id"], "data": {"user_id": "zed", "blocked_id": "amy",
                                                         "tenant_id": tenant["id"]}})
    pymongo.MongoClient(MONGO_URI)[DBS["user"]].outbox.insert_one({
        "_id": eid, "topic": "users", "key": "zed", "value": value, "published": False,
        "created_at": __import__("datetime").datetime.now(__import__("datetime").timezone.utc)})
    ev = wait_event(t0, lambda e: e["id"] == eid)
    assert ev["_key"] == "zed"
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    assert eventually(lambda: db.outbox.find_one({"_id": eid}) is None)  # delivered: deleted


def test_block_refusals(api, tenant):
    bob = token_for(api, tenant, "bob")
    problem(api.call("PUT", "/v1/users/me/blocks/bob", bob), 400, "yourself")
    problem(api.call("PUT", "/v1/users/me/blocks/nobody", bob), 404)
    token_for(api, new_tenant(api), "carol")  # carol exists, but in another tenant
    problem(api.call("PUT", "/v1/users/me/blocks/carol", bob), 404)
    problem(api.call("DELETE", "/v1/users/me/blocks/dave", bob), 404, "not blocked")
    problem(api.call("PUT", "/v1/users/me/blocks/alice"), 401)


def messages(api, token, cid):
    return api.call("GET", f"/v1/conversations/{cid}/messages", token).json()["items"]


def test_erasure_anonymises_the_users_messages(api, tenant):
    t0 = int(time.time() * 1000) - 1000
    erin, bob = token_for(api, tenant, "erin"), token_for(api, tenant, "bob")
    cid = direct(api, erin, "bob").json()["id"]
    for text in ("my secret", "my address"):
        assert send(api, erin, cid, text).status_code == 201
    assert send(api, bob, cid, "ok").status_code == 201
    assert api.call("GET", "/v1/conversations/unread", erin).json()["unread_count"] == 1
    totals = f"unread:{tenant['id']}:erin"  # the kept unread totals (messaging_unread.c)
    assert redis_cli('EXISTS', totals) == ['1']
    assert api.call("DELETE", "/v1/users/me", erin).status_code == 204  # self-service erasure
    problem(api.call("GET", "/v1/users/me", erin), 401, "revoked")
    wait_event(t0, lambda e: e["type"] == "user.deleted" and e["subject"] == "erin" and e["tenant"] == tenant["id"])

    def anonymised():
        items = messages(api, bob, cid)
        return items if [m["sender_id"] for m in items] == ["deleted-user", "deleted-user", "bob"] else None
    items = eventually(anonymised)
    assert items, messages(api, bob, cid)
    assert [m["text"] for m in items] == ["", "", "ok"]
    assert [m["seq"] for m in items] == [1, 2, 3]  # no gap: anonymised, not deleted
    convs = api.call("GET", "/v1/conversations", bob).json()["items"]
    assert [c["last_message"]["text"] for c in convs if c["id"] == cid] == ["ok"]
    assert eventually(lambda: not redis_cli('EXISTS', totals) == ['1'])


def test_erasure_deletes_the_messages_when_the_tenant_says_so(api):
    t = new_tenant(api)
    assert api.call("PATCH", f"/v1/tenants/{t['id']}", body={"settings": {"erase_policy": "delete"}},
                    headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    gus, bob = token_for(api, t, "gus"), token_for(api, t, "bob")
    cid = direct(api, gus, "bob").json()["id"]
    assert send(api, bob, cid, "hello").status_code == 201
    assert send(api, gus, cid, "bye").status_code == 201
    assert server(api, t, "DELETE", "/v1/server/users/gus").status_code == 204

    def preview():
        convs = api.call("GET", "/v1/conversations", bob).json()["items"]
        return [(c["last_message"]["sender_id"], c["last_message"]["text"]) for c in convs if c["id"] == cid]
    # The messages go first, the conversation's preview of the last one right after.
    assert eventually(lambda: preview() == [("deleted-user", "")]), preview()
    assert [m["text"] for m in messages(api, bob, cid)] == ["hello"]


def test_an_unreadable_users_event_is_parked_in_the_dlq(platform):
    """Two broken records on the users topic reach users.dlq as they came, with the reason."""
    t0 = int(time.time() * 1000) - 1000
    marker = "garbage-" + secrets.token_hex(6)
    p = Producer({"bootstrap.servers": KAFKA})
    p.produce("users", key=marker, value=b'{"type": "user.blocked", "data": ')  # cut short
    p.produce("users", key=marker, value=b'{"type": "user.blocked", "id": "x", "data": {"tenant_id": "t"}}')
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": "e2e-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    try:
        assign_since(c, "users.dlq", t0)
        found, deadline = [], time.time() + 30
        while time.time() < deadline and len(found) < 2:
            m = c.poll(0.5)
            # the messaging service's copies (search parks its own, x-consumer: search)
            if (m is not None and not m.error() and m.key() == marker.encode()
                    and dict(m.headers() or []).get("x-consumer") == b"messaging"):
                found.append(m)
    finally:
        c.close()
    assert len(found) == 2
    reasons = sorted(dict(m.headers())["x-error"].decode() for m in found)
    assert any("JSON" in r for r in reasons) and any("user_id" in r for r in reasons), reasons
