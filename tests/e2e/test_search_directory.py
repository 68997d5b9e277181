"""Search beyond messages, end to end through the gateway: user.deleted erasing a user's content
from the index (GDPR), conversation and user search, the global search grouped by kind,
typeahead suggestions and recent searches. Everything reaches the index only through Kafka."""

import contextlib
import json
import sqlite3
import time
import uuid
from urllib.parse import quote

from chat import create, ok, problem, send
from conftest import ADMIN_KEY, KAFKA, assign_since, new_tenant, token_for
from users_lib import server

DEADLINE_S = 15.0


def get(api, token, path, **params):
    qs = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
    return api.call("GET", path + ("?" + qs if qs else ""), token)


def eventually(fn, want, deadline=DEADLINE_S):
    end, got = time.time() + deadline, None
    while time.time() < end:
        got = fn()
        if got == want:
            return got
        time.sleep(0.1)
    raise AssertionError(f"wanted {want!r}, last saw {got!r}")


def item_ids(r):
    assert r.status_code == 200, r.text
    return sorted(it["id"] for it in r.json()["items"])


def test_user_deleted_erases_the_users_messages_from_the_index(api, tenant):
    """Anonymize (the default policy): the erased user's words are no longer found by anyone,
    by word, substring or from:; the other member's messages stay searchable."""
    word, cjk = "gdpr" + uuid.uuid4().hex[:8], "個人情報の削除テスト"
    erin, bob = token_for(api, tenant, "erin"), token_for(api, tenant, "bob")
    cid = create(api, erin, "group", ["bob"], title="erasure")["id"]
    mine = ok(send(api, erin, cid, f"{word} my home address"))["id"]
    ok(send(api, erin, cid, cjk))
    theirs = ok(send(api, bob, cid, f"{word} noted"))["id"]
    q = lambda t, s: item_ids(get(api, t, "/v1/search/messages", q=s))
    eventually(lambda: q(bob, word), sorted([mine, theirs]))
    eventually(lambda: len(q(bob, "情報の削")), 1)
    eventually(lambda: item_ids(get(api, bob, "/v1/search/users", q="erin")), ["erin"])
    assert api.call("DELETE", "/v1/users/me", erin).status_code == 204
    eventually(lambda: q(bob, word), [theirs])
    assert q(bob, "情報の削") == [] and q(bob, "address") == [] and q(bob, "from:erin") == []
    assert item_ids(get(api, bob, "/v1/search/users", q="erin")) == []


def test_user_deleted_with_the_delete_policy(api):
    t = new_tenant(api)
    assert api.call("PATCH", f"/v1/tenants/{t['id']}", body={"settings": {"erase_policy": "delete"}},
                    headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    gus, bob = token_for(api, t, "gus"), token_for(api, t, "bob")
    cid = create(api, gus, "group", ["bob"], title="gone")["id"]
    word = "erase" + uuid.uuid4().hex[:8]
    ok(send(api, gus, cid, f"{word} from gus"))
    kept = ok(send(api, bob, cid, f"{word} from bob"))["id"]
    eventually(lambda: len(item_ids(get(api, bob, "/v1/search/messages", q=word))), 2)
    # gus's recent searches go with him too (erased with the rest)
    ok(get(api, gus, "/v1/search/messages", q="something private"))
    assert server(api, t, "DELETE", "/v1/server/users/gus").status_code == 204
    eventually(lambda: item_ids(get(api, bob, "/v1/search/messages", q=word)), [kept])


def test_conversation_search_finds_only_the_callers_conversations(api, tenant):
    tok = {u: token_for(api, tenant, u) for u in ("ann", "ben", "cat")}
    tag = uuid.uuid4().hex[:6]
    a = create(api, tok["ann"], "group", ["ben"], title=f"Équipe marketing {tag}",
               description="launch plans")["id"]
    b = create(api, tok["cat"], "group", ["ben"], title=f"marketing budget {tag}")["id"]
    c = create(api, tok["ann"], "group", ["cat"], title=f"東京オフィス {tag}")["id"]
    conv = lambda t, s, **kw: item_ids(get(api, t, "/v1/search/conversations", q=s, **kw))
    eventually(lambda: conv(tok["ben"], f"marketing {tag}"), sorted([a, b]))
    assert conv(tok["ann"], f"marketing {tag}") == [a]            # not a member of b
    assert conv(tok["ann"], f"equipe {tag}") == [a]               # diacritics removed
    assert conv(tok["ann"], f"launch {tag}") == [a]               # the description too
    assert conv(tok["ann"], f"mark* {tag}") == [a]                # prefix
    eventually(lambda: conv(tok["cat"], "東京"), [c])               # CJK substring
    assert conv(tok["ben"], "東京") == []
    # A title change is reflected; someone who leaves no longer finds it.
    ok(api.call("PATCH", f"/v1/conversations/{a}", tok["ann"], {"title": f"sales {tag}"}))
    eventually(lambda: conv(tok["ben"], f"sales {tag}"), [a])
    assert conv(tok["ben"], f"equipe {tag}") == []
    ok(api.call("POST", f"/v1/conversations/{a}/leave", tok["ben"]), 200, 204)
    eventually(lambda: conv(tok["ben"], f"sales {tag}"), [])
    # Another tenant: nothing.
    other = new_tenant(api)
    assert conv(token_for(api, other, "ben"), f"marketing {tag}") == []
    problem(get(api, tok["ann"], "/v1/search/conversations", q="x from:ann"), 400, "messages only")
    problem(get(api, tok["ann"], "/v1/search/conversations"), 400, "q is required")
    problem(get(api, tok["ann"], "/v1/search/conversations", q='"open'), 400, "unterminated")
    problem(get(api, tok["ann"], "/v1/search/conversations", q="x", cursor="bad"), 400, "cursor")


def test_user_search_lists_discoverable_users(api, tenant):
    tag = uuid.uuid4().hex[:6]
    me = token_for(api, tenant, "searcher")
    token_for(api, tenant, f"zoe-{tag}", name=f"Zoë Åkesson {tag}")
    token_for(api, tenant, f"hid-{tag}", name=f"Zoe Hidden {tag}")
    token_for(api, tenant, f"yu-{tag}", name="王小明")
    assert server(api, tenant, "PUT", f"/v1/server/users/hid-{tag}",
                  {"discoverable": False}).status_code in (200, 201)
    users = lambda s: item_ids(get(api, me, "/v1/search/users", q=s))
    eventually(lambda: users(f"zoe {tag}"), [f"zoe-{tag}"])       # hidden one not listed
    assert users(f"akesson {tag}") == [f"zoe-{tag}"]
    assert users(f"ake* {tag}") == [f"zoe-{tag}"]
    eventually(lambda: users("小明"), [f"yu-{tag}"])
    hit = get(api, me, "/v1/search/users", q=f"zoe {tag}").json()["items"][0]
    assert hit["name"] == f"Zoë Åkesson {tag}" and "avatar_media_id" in hit
    other = new_tenant(api)
    assert item_ids(get(api, token_for(api, other, "x"), "/v1/search/users", q=f"zoe {tag}")) == []
    problem(get(api, me, "/v1/search/users", q="zoe before:2020-01-01"), 400, "messages only")


def test_global_search_groups_by_kind(api, tenant):
    tag = "kiwi" + uuid.uuid4().hex[:6]
    t = {u: token_for(api, tenant, u, name=f"{u} {tag}") for u in ("dan", "eve")}
    cid = create(api, t["dan"], "group", ["eve"], title=f"{tag} club")["id"]
    m = ok(send(api, t["dan"], cid, f"{tag} for lunch"))["id"]

    def grouped():
        r = get(api, t["eve"], "/v1/search", q=tag)
        assert r.status_code == 200, r.text
        b = r.json()
        return ([i["id"] for i in b["messages"]["items"]], [i["id"] for i in b["conversations"]["items"]],
                sorted(i["id"] for i in b["users"]["items"]))
    eventually(grouped, ([m], [cid], ["dan", "eve"]))
    b = get(api, t["eve"], "/v1/search", q=tag, limit=1).json()
    assert len(b["users"]["items"]) == 1 and b["users"]["more"] is True
    assert b["messages"]["more"] is False
    # Filters narrow messages only; conversations and users match the words.
    b = get(api, t["eve"], "/v1/search", q=f"{tag} from:eve").json()
    assert b["messages"]["items"] == [] and [i["id"] for i in b["conversations"]["items"]] == [cid]
    problem(get(api, t["eve"], "/v1/search", q="has:nothing"), 400, "has:attachment")
    problem(get(api, t["eve"], "/v1/search", q=tag, limit="x"), 400)
    assert api.call("GET", "/v1/search?q=x").status_code == 401


def test_recent_searches_and_suggestions(api, tenant):
    tag = uuid.uuid4().hex[:6]
    me = token_for(api, tenant, "fay", name="Fay")
    other = token_for(api, tenant, "gil", name=f"Gilbert Grape {tag}")
    cid = create(api, me, "group", ["gil"], title=f"Gardening {tag}")["id"]
    create(api, other, "group", [], title=f"Gardens secret {tag}")  # fay is no member
    for q in ("first query", "garden tools", "garlic"):
        ok(get(api, me, "/v1/search/messages", q=q))
    recent = lambda: [i["q"] for i in get(api, me, "/v1/search/recent").json()["items"]]
    assert recent() == ["garlic", "garden tools", "first query"]     # newest first
    ok(get(api, me, "/v1/search", q="first query"))                   # again: moves to the top
    assert recent() == ["first query", "garlic", "garden tools"]
    assert [i["q"] for i in get(api, other, "/v1/search/recent").json()["items"]] == []  # mine only

    def suggest(s):
        r = get(api, me, "/v1/search/suggest", q=s)
        assert r.status_code == 200, r.text
        return [(i["kind"], i.get("id"), i["text"]) for i in r.json()["items"]]
    eventually(lambda: [x for x in suggest(f"g") if x[0] == "recent"],
               [("recent", None, "garlic"), ("recent", None, "garden tools")])
    eventually(lambda: [x for x in suggest(f"gard") if x[0] != "recent"],
               [("conversation", cid, f"Gardening {tag}")])             # not the secret one
    eventually(lambda: [x for x in suggest(f"gilb") if x[0] == "user"],
               [("user", "gil", f"Gilbert Grape {tag}")])
    problem(get(api, me, "/v1/search/suggest"), 400, "q is required")
    problem(get(api, me, "/v1/search/suggest", q='"x'), 400, "unterminated")
    problem(get(api, me, "/v1/search/suggest", q="x" * 600), 400, "longer than 512")
    assert api.call("DELETE", "/v1/search/recent?q=garlic", me).status_code == 204
    assert recent() == ["first query", "garden tools"]
    assert api.call("DELETE", "/v1/search/recent", me).status_code == 204
    assert recent() == []
    # A later page of results is not a new search.
    ok(get(api, me, "/v1/search/messages", q="paged", cursor="o20"))
    assert recent() == []


def admin_of(api, tenant, uid="root"):
    assert server(api, tenant, "PUT", f"/v1/server/users/{uid}",
                  {"roles": ["tenant_admin"]}).status_code in (200, 201)
    return token_for(api, tenant, uid)


def test_tenant_and_user_analytics(api):
    """Counts from the indexed events of a fresh tenant: 3 messages by amy and 2 by bea in one
    conversation (bea replying each time), 1 by amy in another; admins only."""
    t = new_tenant(api)
    root = admin_of(api, t)
    amy, bea, cy = (token_for(api, t, u) for u in ("amy", "bea", "cy"))
    one = create(api, amy, "group", ["bea"], title="busy")["id"]
    two = create(api, amy, "group", ["cy"], title="quiet")["id"]
    for who, text in ((amy, "a1"), (bea, "b1"), (amy, "a2"), (bea, "b2"), (amy, "a3")):
        ok(send(api, who, one, text))
        time.sleep(0.05)
    ok(send(api, amy, two, "hello cy"))
    day = time.strftime("%Y-%m-%d", time.gmtime())
    start = day + "T00:00:00.000Z"

    def tenant_view():
        r = api.call("GET", f"/v1/analytics/tenant?from={day}&bucket=day", root)
        assert r.status_code == 200, r.text
        return r.json()
    end, b = time.time() + DEADLINE_S, None
    while time.time() < end:
        b = tenant_view()
        if sum(p["count"] for p in b["messages"]) == 6 and len(b["top_conversations"]) == 2:
            break
        time.sleep(0.2)
    assert b["bucket"] == "day" and b["messages"] == [{"start": start, "count": 6}], b
    assert b["active_users"]["daily"] == [{"start": start, "count": 2}]      # amy and bea sent
    assert b["active_users"]["monthly"][0]["count"] == 2
    assert b["active_users"]["monthly"][0]["start"] == day[:8] + "01T00:00:00.000Z"
    assert sum(p["count"] for p in b["new_users"]) == 4                       # root, amy, bea, cy
    assert [(c["conversation_id"], c["messages"], c["title"]) for c in b["top_conversations"]] == \
        [(one, 5, "busy"), (two, 1, "quiet")]
    assert b["median_response_time_ms"] is not None and 0 <= b["median_response_time_ms"] < 60000
    assert b["media"] == {"messages_with_attachments": 0, "attachments": 0}
    hours = api.call("GET", f"/v1/analytics/tenant?from={day}&bucket=hour", root).json()
    assert sum(p["count"] for p in hours["messages"]) == 6 and hours["bucket"] == "hour"
    # A range before anything happened: empty series, no median.
    old = api.call("GET", "/v1/analytics/tenant?from=2001-01-01&to=2001-02-01", root).json()
    assert old["messages"] == [] and old["median_response_time_ms"] is None

    u = api.call("GET", f"/v1/analytics/users/amy?from={day}", root)
    assert u.status_code == 200, u.text
    u = u.json()
    assert (u["user_id"], u["messages_sent"], u["messages_received"], u["conversations"],
            u["conversations_posted_in"], u["active_days"]) == ("amy", 4, 2, 2, 2, 1), u
    c = api.call("GET", f"/v1/analytics/users/cy?from={day}", root).json()
    assert (c["messages_sent"], c["messages_received"], c["conversations"]) == (0, 1, 1), c

    problem(api.call("GET", "/v1/analytics/tenant", amy), 403, "admins")
    problem(api.call("GET", "/v1/analytics/users/amy", amy), 403)
    problem(api.call("GET", "/v1/analytics/tenant?bucket=year", root), 400, "bucket")
    problem(api.call("GET", "/v1/analytics/tenant?from=2024-02-01&to=2024-01-01", root), 400, "before")
    problem(api.call("GET", "/v1/analytics/tenant?from=yesterday", root), 400, "from")
    problem(api.call("GET", "/v1/analytics/tenant?from=2000-01-01&bucket=hour", root), 400, "buckets")
    problem(api.call("GET", "/v1/analytics/users/nobody-here", root), 404)
    problem(api.call("GET", "/v1/analytics/users/bad%20id", root), 400)
    # Another tenant's admin sees none of it.
    other = new_tenant(api)
    problem(api.call("GET", "/v1/analytics/users/amy", admin_of(api, other)), 404)
    assert api.call("GET", "/v1/analytics/tenant").status_code == 401


def lose_from_index(tenant, mid):
    """Deletes message `mid` from the tenant's live index file behind the service's back."""
    import sqlite3
    from conftest import ROOT, _BASE
    db = sqlite3.connect(ROOT / "build" / f"search-data-{_BASE}" / f"{tenant['id']}.db", timeout=10)
    db.execute("DELETE FROM messages WHERE id = ?", (mid,))
    db.commit()
    db.close()


def test_reindex_rebuilds_the_index_from_the_topics(api, tenant, platform):
    """A message lost from the live index (deleted from its file behind the service's back)
    is found again after an admin's reindex, which replays the topics; recent searches
    survive; progress is reported; members cannot start one."""
    root = admin_of(api, tenant)
    ivy = token_for(api, tenant, "ivy")
    cid = create(api, root, "group", ["ivy"], title="rebuild me")["id"]
    word = "phoenix" + uuid.uuid4().hex[:6]
    mid = ok(send(api, root, cid, f"{word} rises"))["id"]
    q = lambda: item_ids(get(api, ivy, "/v1/search/messages", q=word))
    eventually(q, [mid])
    lose_from_index(tenant, mid)
    assert q() == []                                   # the index lost it
    ok(get(api, ivy, "/v1/search/messages", q="kept across the rebuild"))

    problem(api.call("POST", "/v1/search/reindex", ivy), 403, "admins")
    r = api.call("POST", "/v1/search/reindex", root)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "running" and r.headers["Location"] == f"/v1/search/reindex/{job['id']}"
    again = api.call("POST", "/v1/search/reindex", root)
    assert again.status_code in (202, 409), again.text        # 409 while it runs
    seen, end = [], time.time() + 240
    while time.time() < end:
        st = api.call("GET", r.headers["Location"], root).json()
        seen.append(st)
        if st["status"] != "running":
            break
        assert q() in ([], [mid])                      # the live index serves meanwhile
        time.sleep(0.5)
    assert st["status"] == "done", st
    assert st["progress"] == 1.0 and st["records_total"] > 0 and st["events_applied"] >= 4, st
    assert all(0 <= s["progress"] <= 1 for s in seen), seen
    read = [s["records_read"] for s in seen]
    assert read == sorted(read), read                  # the replay only moves forward
    assert st["mode"] in ("full", "merge") and st["records_dropped"] >= 0
    assert (st["mode"] == "merge") == (st["records_dropped"] > 0)
    assert q() == [mid]                                # found again
    assert "kept across the rebuild" in [i["q"] for i in get(api, ivy, "/v1/search/recent").json()["items"]]
    problem(api.call("GET", f"/v1/search/reindex/{job['id']}", admin_of(api, new_tenant(api))), 404)
    problem(api.call("GET", "/v1/search/reindex/nope", root), 404)


def test_reindex_job_survives_a_restart(api, tenant, platform):
    """A reindex job's state is kept on disk: after the search service restarts, the job is
    still readable at its URL, goes on from where it was (its progress does not go back) and
    completes; the message the live index lost is found again."""
    root = admin_of(api, tenant)
    cid = create(api, root, "group", [], title="restart me")["id"]
    word = "griffin" + uuid.uuid4().hex[:6]
    mid = ok(send(api, root, cid, f"{word} lands"))["id"]
    q = lambda: item_ids(get(api, root, "/v1/search/messages", q=word))
    eventually(q, [mid])
    lose_from_index(tenant, mid)
    assert q() == []
    r = api.call("POST", "/v1/search/reindex", root)
    assert r.status_code == 202, r.text
    url = r.headers["Location"]
    before, end = r.json(), time.time() + 60
    while before["status"] == "running" and before["records_read"] == 0 and time.time() < end:
        time.sleep(0.1)
        before = api.call("GET", url, root).json()
    search = platform["search"]
    assert search.stop() == 0                          # SIGTERM: the job pauses
    search.start()
    st = api.call("GET", url, root)
    assert st.status_code == 200, st.text               # the job outlived the process
    st = st.json()
    assert st["id"] == before["id"] and st["started_at"] == before["started_at"], st
    assert st["records_read"] >= before["records_read"], (before, st)
    end = time.time() + 240
    while st["status"] == "running" and time.time() < end:
        time.sleep(0.5)
        st = api.call("GET", url, root).json()
    assert st["status"] == "done", st
    assert st["progress"] == 1.0 and st["records_read"] >= before["records_read"], st
    assert q() == [mid]                                # the resumed job rebuilt the index


def test_reindex_backfills_history_the_topics_no_longer_hold(api, tenant, mongo):
    """History the topics lost to retention but the messaging service's conversation log still
    holds comes back with a backfilling reindex: an event is put into messaging's log only
    (as if Kafka had dropped it), so a replay of the topics alone cannot find it."""
    import json
    root = admin_of(api, tenant)
    cid = create(api, root, "group", [], title="old history")["id"]
    word = "basilisk" + uuid.uuid4().hex[:6]
    mid = ok(send(api, root, cid, f"{word} today"))["id"]
    q = lambda w: item_ids(get(api, root, "/v1/search/messages", q=w))
    eventually(lambda: q(word), [mid])
    # An older message in messaging's log alone: the copy of the real event with another
    # message id, text and eseq, marked published so the outbox never sends it to Kafka.
    real = None
    end = time.time() + 10
    while real is None and time.time() < end:
        real = mongo.events.find_one({"conversation_id": cid, "type": "message.created",
                                      "published": True})
        time.sleep(0.2)
    assert real is not None
    old_word, old_id = "wyvern" + uuid.uuid4().hex[:6], str(uuid.uuid4())
    data = json.loads(real["data"])
    data.update(id=old_id, text=f"{old_word} from long ago", seq=data["seq"] + 1000)
    fake = dict(real, _id=str(uuid.uuid4()), eseq=real["eseq"] + 1000, data=json.dumps(data))
    mongo.events.insert_one(fake)
    try:
        # messaging's export, page by page (service port: the gateway routes no /internal)
        import requests
        from conftest import INTERNAL_HEADERS, PORTS
        base = f"http://127.0.0.1:{PORTS['messaging']}/internal/v1/messaging/events"
        seen, cursor = [], None
        while True:
            page = requests.get(base, params={"tenant": tenant["id"], "limit": 1,
                                              **({"after": cursor} if cursor else {})},
                                headers=INTERNAL_HEADERS, timeout=10)
            assert page.status_code == 200, page.text
            page = page.json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(page["items"]) == 1
        assert all(e["tenant"] == tenant["id"] and e["specversion"] == "1.0" for e in seen)
        assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
        assert {fake["_id"], real["_id"]} <= {e["id"] for e in seen}
        assert requests.get(base, headers=INTERNAL_HEADERS, timeout=10).status_code == 400  # no tenant
        assert requests.get(base, params={"tenant": tenant["id"], "limit": "x"}, headers=INTERNAL_HEADERS,
                            timeout=10).status_code == 400
        problem(api.call("POST", "/v1/search/reindex", root, body={"backfill": 1}), 400, "true or false")
        r = api.call("POST", "/v1/search/reindex", root, body={"backfill": True})
        assert r.status_code == 202, r.text
        assert r.json()["backfill"] is True
        st, end = r.json(), time.time() + 240
        while st["status"] == "running" and time.time() < end:
            time.sleep(0.5)
            st = api.call("GET", r.headers["Location"], root).json()
        assert st["status"] == "done", st
        assert st["events_backfilled"] >= 3, st        # conversation.created, both messages
        assert q(old_word) == [old_id]                  # only messaging's log had it
        assert q(word) == [mid]
    finally:
        mongo.events.delete_one({"_id": fake["_id"]})


@contextlib.contextmanager
def own_search(tenant, name):
    """A search instance of its own that reads topics of its own (KAFKA_TOPIC_PREFIX, one
    partition each, messages.dlq included), away from the shared topics' traffic. Yields the
    prefix, an Api on the instance, its data directory, a Kafka AdminClient, a Producer and
    event(type, eseq, data), which makes a CloudEvent of `tenant`. Afterwards the topics and
    the data go, and the instance must have stopped cleanly with no sanitizer report."""
    import shutil
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from conftest import LOGS, PORTS, ROOT, SANITIZER_MARKS, Api, Service

    prefix = f"e2e-{name}-{uuid.uuid4().hex[:8]}-"
    data_dir = ROOT / "build" / f"search-{name}-{PORTS['gateway']}"
    shutil.rmtree(data_dir, ignore_errors=True)
    admin = AdminClient({"bootstrap.servers": KAFKA})
    topics = [prefix + t for t in ("messages", "conversations", "users", "messages.dlq")]
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(30)
    search = Service("search", {"KAFKA_TOPIC_PREFIX": prefix, "SEARCH_GROUP": prefix + "search",
                                "SEARCH_DATA_DIR": str(data_dir),
                                "HTTP_PORT": str(PORTS["gateway"] + 26)})
    search.port = PORTS["gateway"] + 26
    search.log_path = LOGS / f"search-{name}.log"

    def event(type_, eseq, data):
        return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_,
                           "source": "/e2e", "tenant": tenant["id"],
                           "time": "2026-01-02T03:04:05.000Z", "eseq": eseq, "data": data})
    try:
        search.start()
        yield (prefix, Api(f"http://127.0.0.1:{search.port}"), data_dir, admin,
               Producer({"bootstrap.servers": KAFKA}), event)
    finally:
        search.stop()
        for f in admin.delete_topics(topics).values():
            try:
                f.result(30)
            except Exception:
                pass
        shutil.rmtree(data_dir, ignore_errors=True)
    text = search.log_path.read_text(errors="replace") if search.log_path.exists() else ""
    assert not [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKS)], text[-2000:]
    assert search.proc.returncode == 0


def group_created(event, cid):
    """conversation.created of a group of root and reader."""
    return event("conversation.created", 1, {
        "id": cid, "type": "group", "title": "own search", "created_by": "root",
        "created_at": "2026-01-02T03:04:00.000Z",
        "initial_members": [{"user_id": "root"}, {"user_id": "reader"}]})


def test_reindex_merges_onto_the_live_index_when_the_topics_dropped_records(api, tenant, platform):
    """When retention dropped records from the topics, a reindex is a `merge`: the replay goes
    onto a copy of the live index, so history only the live index still holds survives it,
    and what the live index lost within the retention comes back. A search instance of its
    own reads topics of its own (KAFKA_TOPIC_PREFIX), whose first records this test deletes
    as retention would (Kafka DeleteRecords), without touching the shared topics."""
    from confluent_kafka import TopicPartition

    with own_search(tenant, "merge") as (prefix, direct, data_dir, admin, prod, event):
        root, reader = admin_of(api, tenant), token_for(api, tenant, "reader")
        cid, t = str(uuid.uuid4()), tenant["id"]
        old_word, new_word = "manticore" + uuid.uuid4().hex[:6], "chimera" + uuid.uuid4().hex[:6]
        old_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())

        def message(mid, seq, text):
            return {"id": mid, "conversation_id": cid, "sender_id": "root", "seq": seq,
                    "type": "text", "text": text, "created_at": f"2026-01-02T03:04:0{seq}.000Z"}

        prod.produce(prefix + "conversations", key=cid, value=group_created(event, cid))
        offsets = []
        for mid, seq, text in ((old_id, 1, f"{old_word} long ago"), (new_id, 2, f"{new_word} lately")):
            prod.produce(prefix + "messages", key=cid, value=event("message.created", seq + 1,
                                                                   message(mid, seq, text)),
                         on_delivery=lambda err, msg: offsets.append((err, msg.offset())))
        assert prod.flush(30) == 0 and [e for e, _ in offsets] == [None, None], offsets
        q = lambda w: item_ids(get(direct, reader, "/v1/search/messages", q=w))
        eventually(lambda: q(old_word), [old_id])
        eventually(lambda: q(new_word), [new_id])
        # Retention drops the older message from the topic: the live index alone holds it.
        part = TopicPartition(prefix + "messages", 0, offsets[1][1])
        for f in admin.delete_records([part]).values():
            assert f.result(30).low_watermark == offsets[1][1]
        # The live index loses the newer one, which the topic still holds.
        db = sqlite3.connect(data_dir / f"{t}.db", timeout=10)
        db.execute("DELETE FROM messages WHERE id = ?", (new_id,))
        db.commit()
        db.close()
        assert q(new_word) == []
        r = direct.call("POST", "/v1/search/reindex", root)
        assert r.status_code == 202, r.text
        st, end = r.json(), time.time() + 240
        while st["status"] == "running" and time.time() < end:
            time.sleep(0.5)
            st = direct.call("GET", r.headers["Location"], root).json()
        assert st["status"] == "done", st
        assert st["mode"] == "merge" and st["records_dropped"] == 1, st
        assert st["backfill"] is True, st                # merge mode backfills from messaging
        assert q(new_word) == [new_id]                   # replayed from the topic
        assert q(old_word) == [old_id]                   # kept from the live index's copy


def test_a_message_without_a_free_rid_slot_is_dead_lettered_and_indexing_goes_on(api, tenant):
    """Rids are 16 slots per ms with up to 1,024 spill slots (services/search/search.h): a
    message created when its tenant's 1,024 slots from its own are taken cannot be indexed,
    and retrying cannot change that. It goes to messages.dlq with the reason, and the messages
    after it are indexed."""
    from confluent_kafka import Consumer

    with own_search(tenant, "rid") as (prefix, direct, data_dir, admin, prod, event):
        reader, cid = token_for(api, tenant, "reader"), str(uuid.uuid4())
        word, late = "quokka" + uuid.uuid4().hex[:6], "wombat" + uuid.uuid4().hex[:6]
        ids = [str(uuid.uuid4()) for _ in range(1026)]

        def message(i, text, at):
            # seq a multiple of 16: every message of that ms starts from the same slot
            return event("message.created", 2 + i, {
                "id": ids[i], "conversation_id": cid, "sender_id": "root", "seq": 16 * (i + 1),
                "type": "text", "text": text, "created_at": at})

        t0 = int(time.time() * 1000) - 1000
        prod.produce(prefix + "conversations", key=cid, value=group_created(event, cid))
        for i in range(1025):  # 1,024 fill the slots, the 1,025th finds none
            text = f"{word} {i}" if i in (1023, 1024) else f"filler {i}"
            prod.produce(prefix + "messages", key=cid, value=message(i, text, "2026-01-02T03:04:05.000Z"))
        prod.produce(prefix + "messages", key=cid, value=message(1025, late, "2026-01-02T03:04:06.000Z"))
        assert prod.flush(30) == 0
        q = lambda w: item_ids(get(direct, reader, "/v1/search/messages", q=w))
        eventually(lambda: q(late), [ids[1025]], deadline=60)
        assert q(word) == [ids[1023]]  # the last one that found a slot; the next is not there

        c = Consumer({"bootstrap.servers": KAFKA, "group.id": "e2e-" + uuid.uuid4().hex,
                      "enable.auto.commit": False})
        try:
            assign_since(c, prefix + "messages.dlq", t0)
            parked, deadline = [], time.time() + 30
            while time.time() < deadline and not parked:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    parked.append(m)
        finally:
            c.close()
        assert len(parked) == 1 and json.loads(parked[0].value())["data"]["id"] == ids[1024]
        h = dict(parked[0].headers())
        assert h["x-consumer"] == b"search" and b"no free rid slot" in h["x-error"], h
