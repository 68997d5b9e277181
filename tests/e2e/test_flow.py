"""The newcomer flow through the gateway: tenant, tokens, direct conversation, messages in
order, each one stored in MongoDB and published as a CloudEvent that validates against its
schema; retries, concurrency, pagination and the conversation list."""

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema

from conftest import ROOT, new_tenant, read_events, token_for


def event_schema(event_type):
    return json.loads((ROOT / f"proto/events/{event_type}.schema.json").read_text())


def direct(api, token, other):
    r = api.call("POST", "/v1/conversations", token, {"type": "direct", "members": [other]})
    assert r.status_code in (200, 201), r.text
    return r.json()


def send(api, token, cid, text, client_msg_id=None):
    body = {"text": text}
    if client_msg_id:
        body["client_msg_id"] = client_msg_id
    return api.call("POST", f"/v1/conversations/{cid}/messages", token, body)


def all_pages(api, token, path, query=""):
    """Follows next_cursor from the first page to the last; returns every item in order."""
    items, cursor = [], None
    while True:
        sep = "&" if "?" in path + query else "?"
        r = api.call("GET", path + query + (f"{sep}cursor={cursor}" if cursor else ""), token)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def test_newcomer_flow_stores_and_publishes_each_message(api, tenant, mongo):
    t0 = int(time.time() * 1000) - 1000
    alice = token_for(api, tenant, "alice", "Alice")
    bob = token_for(api, tenant, "bob", "Bob")
    conv = direct(api, alice, "bob")
    assert conv["type"] == "direct" and sorted(conv["members"]) == ["alice", "bob"]

    sent = []
    for i, text in enumerate(["hello bob", "how are you?", "héllo ✓ 你好"]):
        r = send(api, alice if i != 1 else bob, conv["id"], text)
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"/v1/conversations/{conv['id']}/messages/{r.json()['id']}"
        sent.append(r.json())
    assert [m["seq"] for m in sent] == [1, 2, 3]

    r = api.call("GET", f"/v1/conversations/{conv['id']}/messages", bob)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [m["text"] for m in page["items"]] == ["hello bob", "how are you?", "héllo ✓ 你好"]
    assert [m["sender_id"] for m in page["items"]] == ["alice", "bob", "alice"]
    assert page["next_cursor"] is None

    for m in sent:  # stored in MongoDB
        doc = mongo.messages.find_one({"_id": m["id"]})
        assert doc is not None and doc["seq"] == m["seq"] and doc["tenant"] == tenant["id"]

    ids = {m["id"] for m in sent}
    events = read_events("messages", lambda evs: ids <= {e["id"] for e in evs}, t0)
    ours = [e for e in events if e["id"] in ids]
    assert {e["id"] for e in ours} == ids, "every accepted message appears on the topic"
    for e in ours:
        assert e["type"] == "message.created" and e["tenant"] == tenant["id"]
        assert e["_key"] == conv["id"] and e["subject"] == conv["id"]
    schema = event_schema("message.created")
    for e in ours:
        jsonschema.Draft202012Validator(schema).validate({k: v for k, v in e.items() if k != "_key"})
    by_id = {e["id"]: e for e in ours}
    for m in sent:
        assert by_id[m["id"]]["data"] == m


def test_direct_conversation_is_unique_per_pair(api, tenant):
    a = token_for(api, tenant, "ann")
    b = token_for(api, tenant, "ben")
    first = api.call("POST", "/v1/conversations", a, {"type": "direct", "members": ["ben"]})
    assert first.status_code == 201
    assert first.headers["Location"] == f"/v1/conversations/{first.json()['id']}"
    assert send(api, a, first.json()["id"], "hi ben").status_code == 201
    again = api.call("POST", "/v1/conversations", b, {"type": "direct", "members": ["ann"]})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["unread_count"] == 1  # ben has not read ann's message
    mine = api.call("POST", "/v1/conversations", a, {"type": "direct", "members": ["ben"]})
    assert mine.status_code == 200 and mine.json()["unread_count"] == 0  # own message


def test_retry_returns_original_and_different_body_conflicts(api, tenant, mongo):
    a = token_for(api, tenant, "a1")
    token_for(api, tenant, "b1")
    cid = direct(api, a, "b1")["id"]
    first = send(api, a, cid, "once", "cmid-1")
    assert first.status_code == 201
    retry = send(api, a, cid, "once", "cmid-1")
    assert retry.status_code == 200
    assert (retry.json()["id"], retry.json()["seq"]) == (first.json()["id"], first.json()["seq"])
    clash = send(api, a, cid, "something else", "cmid-1")
    assert clash.status_code == 409
    assert clash.headers["Content-Type"] == "application/problem+json"
    assert mongo.messages.count_documents({"conversation_id": cid}) == 1


def test_concurrent_retries_of_one_message_store_it_once(api, tenant, mongo):
    a = token_for(api, tenant, "racer")
    token_for(api, tenant, "other")
    cid = direct(api, a, "other")["id"]
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda _: send(api, a, cid, "same", "dup-1"), range(8)))
    assert sorted(r.status_code for r in rs).count(201) == 1
    assert {r.json()["id"] for r in rs} == {rs[0].json()["id"]}
    assert mongo.messages.count_documents({"conversation_id": cid}) == 1


def test_concurrent_sends_get_distinct_gap_free_seqs(api, tenant):
    users = [f"u{i}" for i in range(5)]
    tokens = {u: token_for(api, tenant, u) for u in users}
    r = api.call("POST", "/v1/conversations", tokens["u0"],
                 {"type": "group", "title": "race", "members": users[1:]})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    jobs = [(u, f"{u}-{k}") for u in users for k in range(10)]
    with ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(lambda j: send(api, tokens[j[0]], cid, j[1]), jobs))
    assert all(r.status_code == 201 for r in rs), [r.text for r in rs if r.status_code != 201][:3]
    seqs = sorted(r.json()["seq"] for r in rs)
    assert seqs == list(range(1, len(jobs) + 1))


def test_message_pagination_both_directions(api, tenant):
    a = token_for(api, tenant, "pager")
    token_for(api, tenant, "reader")
    cid = direct(api, a, "reader")["id"]
    for i in range(7):
        assert send(api, a, cid, f"m{i}").status_code == 201
    path = f"/v1/conversations/{cid}/messages"
    assert [m["seq"] for m in all_pages(api, a, path, "?direction=forward&limit=3")] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["seq"] for m in all_pages(api, a, path, "?direction=backward&limit=3")] == [7, 6, 5, 4, 3, 2, 1]
    r = api.call("GET", f"/v1/conversations/{cid}/messages?limit=100000", a)
    assert r.status_code == 200 and len(r.json()["items"]) == 7  # limit clamped, not refused


def test_conversation_list_newest_first_with_unread_counts(api, tenant):
    me = token_for(api, tenant, "lister")
    peers = [f"peer{i}" for i in range(3)]
    tok = {p: token_for(api, tenant, p) for p in peers}
    convs = [direct(api, me, p)["id"] for p in peers]
    # Activity order: peer1 oldest, then peer0, then peer2 newest.
    for p, cid, n in [("peer1", convs[1], 1), ("peer0", convs[0], 2), ("peer2", convs[2], 3)]:
        for k in range(n):
            assert send(api, tok[p], cid, f"{p}-{k}").status_code == 201
        time.sleep(0.01)
    assert send(api, me, convs[0], "my reply").status_code == 201  # own: peer0 now newest, read
    items = all_pages(api, me, "/v1/conversations", "?limit=2")
    assert [c["id"] for c in items] == [convs[0], convs[2], convs[1]]
    unread = {c["id"]: c["unread_count"] for c in items}
    assert unread == {convs[0]: 0, convs[2]: 3, convs[1]: 1}
    assert items[0]["last_message"]["text"] == "my reply"
    # The peers see the other side of it.
    r = api.call("GET", "/v1/conversations", tok["peer0"])
    assert r.json()["items"][0]["unread_count"] == 1


def test_send_rate_limit_per_user(api, busy_tenant):
    tenant = busy_tenant  # the messaging service's 60 a minute, not the gateway's 20 a second
    a = token_for(api, tenant, "chatty")
    token_for(api, tenant, "quiet")
    cid = direct(api, a, "quiet")["id"]
    codes = [send(api, a, cid, f"n{i}").status_code for i in range(60)]
    assert codes == [201] * 60
    r = send(api, a, cid, "one too many")
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Remaining"] == "0"
    assert r.json()["type"] == "urn:chat:problem:rate-limited"


def test_users_me_register_and_login(api):
    t = new_tenant(api, self_registration=True)
    r = api.call("POST", "/v1/auth/register",
                 body={"tenant_id": t["id"], "username": "Carol", "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    token = r.json()["access_token"]
    me = api.call("GET", "/v1/users/me", token).json()
    assert me["username"] == "carol" and me["tenant_id"] == t["id"]
    again = api.call("POST", "/v1/auth/register",
                     body={"tenant_id": t["id"], "username": "carol", "password": "another long one"})
    assert again.status_code == 409
    ok = api.call("POST", "/v1/auth/login",
                  body={"tenant_id": t["id"], "username": "CAROL", "password": "correct horse battery"})
    assert ok.status_code == 200 and ok.json()["user"]["id"] == me["id"]
    bad_pw = api.call("POST", "/v1/auth/login",
                      body={"tenant_id": t["id"], "username": "carol", "password": "wrong password"})
    no_user = api.call("POST", "/v1/auth/login",
                       body={"tenant_id": t["id"], "username": "nobody", "password": "wrong password"})
    assert bad_pw.status_code == no_user.status_code == 401
    assert bad_pw.json()["detail"] == no_user.json()["detail"]  # no account enumeration


def test_registration_closed_and_weak_passwords(api, tenant):
    r = api.call("POST", "/v1/auth/register",
                 body={"tenant_id": tenant["id"], "username": "dave", "password": "long enough pw"})
    assert r.status_code == 403
    t = new_tenant(api, self_registration=True)
    for pw, why in [("short", "at least 8"), ("password", "common"), ("x" * 129, "at most 128")]:
        r = api.call("POST", "/v1/auth/register", body={"tenant_id": t["id"], "username": "erin", "password": pw})
        assert r.status_code == 400 and why in r.json()["detail"], r.text


def test_request_id_is_passed_back_or_created(api, tenant):
    r = api.call("GET", "/v1/users/me", headers={"X-Request-Id": "my-trace-123"})
    assert r.headers["X-Request-Id"] == "my-trace-123" and r.json()["request_id"] == "my-trace-123"
    r = api.call("GET", "/v1/users/me", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces" and len(r.headers["X-Request-Id"]) == 36


def test_health_and_metrics_on_every_process(platform):
    import requests
    for s in platform.values():
        base = f"http://127.0.0.1:{s.port}"
        assert requests.get(base + "/health/live").json() == {"status": "ok"}
        assert requests.get(base + "/health/ready").status_code == 200
        m = requests.get(base + "/metrics")
        assert m.status_code == 200 and "http_requests_in_flight" in m.text
    m = requests.get(f"http://127.0.0.1:{platform['messaging'].port}/metrics").text
    assert 'messaging_outbox_events_total{outcome="delivered"}' in m
