"""Messages in full through the gateway: types, mentions, replies and threads, edits with
history, deletion for oneself and for everyone (and the policy against it), reactions, forwards,
pins, every rule and limit, and the events on Kafka."""

import pytest
import socket as pysocket
import threading
import time
import uuid

import requests

from chat import all_pages, configured, create, media_ids, ok, problem, role_token, send, validate_event
from conftest import extra_service, new_tenant, read_events, token_for

MEDIA = [str(uuid.uuid4()) for _ in range(11)]


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def msgs_path(cid, rest=""):
    return f"/v1/conversations/{cid}/messages{rest}"


def test_message_types_and_their_rules(api, tenant):
    t = users(api, tenant, "ta", "tb")
    cid = create(api, t["ta"], "direct", ["tb"])["id"]
    mine = media_ids(api, t["ta"], 2)
    img = ok(api.call("POST", msgs_path(cid), t["ta"], {"type": "image", "attachments": mine, "text": "look"}))
    assert (img["type"], img["attachments"], img["text"]) == ("image", mine, "look")
    f = ok(api.call("POST", msgs_path(cid), t["ta"], {"type": "file", "attachments": mine[:1]}))
    assert (f["type"], f["text"]) == ("file", "")
    for body, detail in [({"type": "image", "text": "no picture"}, "at least one media id"),
                         ({"type": "text", "text": "x", "attachments": MEDIA[:1]}, "'image' or 'file'"),
                         ({"type": "system", "text": "fake"}, "written by the service"),
                         ({"type": "video", "text": "x"}, "'text', 'image' or 'file'"),
                         ({"type": "file", "attachments": MEDIA}, "at most 10"),
                         ({"type": "file", "attachments": ["nope"]}, "invalid id"),
                         ({"type": "file", "attachments": [MEDIA[0], MEDIA[0]]}, "twice"),
                         ({"type": "text"}, "'text' is required")]:
        problem(api.call("POST", msgs_path(cid), t["ta"], body), 400, detail)
    assert [m["seq"] for m in all_pages(api, t["tb"], msgs_path(cid))] == [1, 2]


def test_attachments_are_checked_with_the_media_service(api, tenant):
    t = users(api, tenant, "aa", "ab")
    cid = create(api, t["aa"], "direct", ["ab"])["id"]
    theirs = media_ids(api, t["ab"], 1)[0]
    problem(api.call("POST", msgs_path(cid), t["aa"], {"type": "file", "attachments": [theirs]}), 409, "cannot be sent")
    problem(api.call("POST", msgs_path(cid), t["aa"], {"type": "file", "attachments": [str(uuid.uuid4())]}),
            400, "no media object of this tenant")
    other = new_tenant(api)
    foreign = media_ids(api, token_for(api, other, "aa"), 1)[0]  # same user id, another tenant
    problem(api.call("POST", msgs_path(cid), t["aa"], {"type": "file", "attachments": [foreign]}),
            400, "no media object of this tenant")
    assert all_pages(api, t["ab"], msgs_path(cid)) == []
    ok(api.call("POST", msgs_path(cid), t["ab"], {"type": "file", "attachments": [theirs]}))


def test_mentions_count_as_unread_mentions(api, tenant):
    t = users(api, tenant, "mna", "mnb", "mnc", "outsider")
    cid = create(api, t["mna"], "group", ["mnb", "mnc"])["id"]
    ok(send(api, t["mna"], cid, "hey @mnb", mentions=["mnb"]))
    ok(send(api, t["mnc"], cid, "@mnb @mna look", mentions=["mnb", "mna"]))
    conv = lambda who: ok(api.call("GET", f"/v1/conversations/{cid}", t[who]), 200)
    assert (conv("mnb")["unread_mentions"], conv("mnb")["unread_count"]) == (2, 2)
    assert conv("mna")["unread_mentions"] == 1 and conv("mnc")["unread_mentions"] == 0
    problem(send(api, t["mna"], cid, "x", mentions=["outsider"]), 400, "not a member")
    problem(send(api, t["mna"], cid, "x", mentions=[f"u{i}" for i in range(21)]), 400, "at most 20")


def test_replies_and_threads(api, tenant):
    t = users(api, tenant, "ra", "rb")
    cid = create(api, t["ra"], "group", ["rb"])["id"]
    root = ok(send(api, t["ra"], cid, "root"))
    quote = ok(send(api, t["rb"], cid, "quoting", reply_to=root["id"]))
    assert quote["reply_to"] == root["id"] and "thread_root" not in quote
    replies = [ok(send(api, t["rb" if k % 2 else "ra"], cid, f"reply {k}", thread_root=root["id"])) for k in range(5)]
    got = ok(api.call("GET", msgs_path(cid, f"/{root['id']}"), t["rb"]), 200)
    assert got["reply_count"] == 5 and got["last_reply_at"] == replies[-1]["created_at"]
    thread = all_pages(api, t["rb"], msgs_path(cid, f"/{root['id']}/thread"), "?limit=2")
    assert [m["text"] for m in thread] == [f"reply {k}" for k in range(5)]
    problem(send(api, t["ra"], cid, "nested", thread_root=replies[0]["id"]), 400, "first message")
    other = create(api, t["ra"], "direct", ["rb"])["id"]
    problem(send(api, t["ra"], other, "x", reply_to=root["id"]), 400, "no message of this conversation")
    problem(send(api, t["ra"], cid, "x", thread_root="not-an-id"), 400, "message ids")
    problem(api.call("GET", msgs_path(cid, f"/{uuid.uuid4()}/thread"), t["ra"]), 404)


def test_edit_window_history_and_rules(api, tenant, platform):
    t = users(api, tenant, "ea", "eb")
    cid = create(api, t["ea"], "group", ["eb"])["id"]
    m = ok(send(api, t["ea"], cid, "first"))
    e1 = ok(api.call("PATCH", msgs_path(cid, f"/{m['id']}"), t["ea"], {"text": "second"}), 200)
    e2 = ok(api.call("PATCH", msgs_path(cid, f"/{m['id']}"), t["ea"], {"text": "third"}), 200)
    assert (e2["text"], e2["edits"], e2["seq"]) == ("third", 2, m["seq"]) and e1["edits"] == 1
    h = ok(api.call("GET", msgs_path(cid, f"/{m['id']}/history"), t["eb"]), 200)
    assert [(v["version"], v["text"]) for v in h["versions"]] == [(0, "first"), (1, "second"), (2, "third")]
    assert h["versions"][0]["at"] == m["created_at"] and h["versions"][2]["at"] == e2["edited_at"]
    problem(api.call("PATCH", msgs_path(cid, f"/{m['id']}"), t["eb"], {"text": "not mine"}), 403, "only the sender")
    problem(api.call("PATCH", msgs_path(cid, f"/{m['id']}"), t["ea"], {"text": ""}), 400, "empty")
    problem(api.call("PATCH", msgs_path(cid, f"/{uuid.uuid4()}"), t["ea"], {"text": "x"}), 404)
    assert ok(api.call("GET", f"/v1/conversations/{cid}", t["eb"]), 200)["last_message"]["text"] == "third"
    # The edit window is the tenant's setting (user service; cached 500 ms in the suite).
    from conftest import ADMIN_KEY
    r = api.call("PATCH", f"/v1/tenants/{tenant['id']}", body={"settings": {"edit_window_s": 1}},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    time.sleep(0.7)
    late = ok(send(api, t["ea"], cid, "soon too late"))
    time.sleep(1.3)
    problem(api.call("PATCH", msgs_path(cid, f"/{late['id']}"), t["ea"], {"text": "x"}), 403, "1 seconds")


def test_delete_for_me_and_for_everyone(api, tenant, platform):
    t = users(api, tenant, "xa", "xb", "xc")
    cid = create(api, t["xa"], "group", ["xb", "xc"])["id"]
    a = ok(send(api, t["xb"], cid, "to hide"))
    b = ok(send(api, t["xb"], cid, "to delete", mentions=["xc"]))
    c = ok(send(api, t["xc"], cid, "stays"))
    ok(api.call("PATCH", msgs_path(cid, f"/{b['id']}"), t["xb"], {"text": "edited"}), 200)
    assert api.call("DELETE", msgs_path(cid, f"/{a['id']}?scope=for_me"), t["xc"]).status_code == 204
    assert [m["id"] for m in all_pages(api, t["xc"], msgs_path(cid))] == [b["id"], c["id"]]
    assert [m["id"] for m in all_pages(api, t["xb"], msgs_path(cid))] == [a["id"], b["id"], c["id"]]
    problem(api.call("DELETE", msgs_path(cid, f"/{b['id']}"), t["xc"]), 403, "only the sender, owners, admins")
    assert api.call("DELETE", msgs_path(cid, f"/{b['id']}"), t["xb"]).status_code == 204
    tomb = ok(api.call("GET", msgs_path(cid, f"/{b['id']}"), t["xc"]), 200)
    assert (tomb["deleted"], tomb["text"], tomb["seq"]) == (True, "", b["seq"])
    assert "mentions" not in tomb and "edits" not in tomb
    assert ok(api.call("GET", msgs_path(cid, f"/{b['id']}/history"), t["xc"]), 200)["versions"] == []
    problem(api.call("PATCH", msgs_path(cid, f"/{b['id']}"), t["xb"], {"text": "back"}), 409, "deleted")
    assert api.call("DELETE", msgs_path(cid, f"/{c['id']}"), t["xa"]).status_code == 204  # the owner moderates
    d = create(api, t["xa"], "direct", ["xb"])["id"]
    m = ok(send(api, t["xb"], d, "direct"))
    problem(api.call("DELETE", msgs_path(d, f"/{m['id']}"), t["xa"]), 403, "only the sender")
    assert api.call("DELETE", msgs_path(d, f"/{m['id']}"), role_token(tenant["id"], "xa", "moderator")).status_code == 204
    problem(api.call("DELETE", msgs_path(cid, f"/{a['id']}?scope=everything"), t["xb"]), 400, "scope")
    with configured(platform, MESSAGE_DELETION="forbid"):
        keep = ok(send(api, t["xb"], cid, "kept forever"))
        problem(api.call("DELETE", msgs_path(cid, f"/{keep['id']}"), t["xb"]), 403, "policy")
        assert api.call("DELETE", msgs_path(cid, f"/{keep['id']}?scope=for_me"), t["xb"]).status_code == 204


def test_reactions_one_per_user_per_emoji_with_a_cap(api, tenant, platform):
    t = users(api, tenant, "qa", "qb")
    cid = create(api, t["qa"], "group", ["qb"])["id"]
    m = ok(send(api, t["qa"], cid, "react to me"))
    r = api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qa"], {"emoji": "👍"})
    assert r.status_code == 201 and r.json()["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    again = api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qa"], {"emoji": "👍"})
    assert again.status_code == 200 and again.json()["reactions"][0]["count"] == 1
    ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qb"], {"emoji": "👍"}))
    ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qb"], {"emoji": "🎉"}))
    seen_by_a = ok(api.call("GET", msgs_path(cid, f"/{m['id']}"), t["qa"]), 200)["reactions"]
    assert seen_by_a == [{"emoji": "👍", "count": 2, "me": True}, {"emoji": "🎉", "count": 1, "me": False}]
    listed = all_pages(api, t["qb"], msgs_path(cid))[0]["reactions"]
    assert listed == [{"emoji": "👍", "count": 2, "me": True}, {"emoji": "🎉", "count": 1, "me": True}]
    removed = ok(api.call("DELETE", msgs_path(cid, f"/{m['id']}/reactions/🎉"), t["qb"]), 200)
    assert removed["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
    problem(api.call("DELETE", msgs_path(cid, f"/{m['id']}/reactions/🎉"), t["qb"]), 404, "not reacted")
    for bad, detail in [({"emoji": ""}, "'emoji'"), ({"emoji": "a b"}, "whitespace"), ({"emoji": "x" * 33}, "'emoji'"),
                        ({"emoji": "\u0007"}, "control")]:
        problem(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qa"], bad), 400, detail)
    with configured(platform, REACTION_EMOJI_MAX=2):
        ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qa"], {"emoji": "❤️"}))
        problem(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qa"], {"emoji": "😂"}), 409, "at most 2")
        ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qb"], {"emoji": "❤️"}))  # not a new emoji
    assert api.call("DELETE", msgs_path(cid, f"/{m['id']}"), t["qa"]).status_code == 204
    problem(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["qb"], {"emoji": "👍"}), 409, "deleted")


def test_forward_with_its_limits(api, tenant):
    t = users(api, tenant, "fa", "fb", "fc")
    src = create(api, t["fa"], "group", ["fb"])["id"]
    dst1 = create(api, t["fa"], "direct", ["fc"])["id"]
    dst2 = create(api, t["fa"], "group", ["fb", "fc"])["id"]
    elsewhere = create(api, t["fb"], "direct", ["fc"])["id"]  # fa is not a member
    sent = [ok(send(api, t["fb"], src, f"s{k}")) for k in range(3)]
    r = api.call("POST", f"/v1/conversations/{src}/forward", t["fa"],
                 {"message_ids": [s["id"] for s in sent[:2]], "to": [dst1, dst2]})
    assert r.status_code == 201, r.text
    out = r.json()["forwarded"]
    assert [o["conversation_id"] for o in out] == [dst1, dst2]
    copy = out[0]["messages"][0]
    assert (copy["text"], copy["sender_id"], copy["forwarded_from"]) == \
        ("s0", "fa", {"conversation_id": src, "message_id": sent[0]["id"], "sender_id": "fb"})
    assert [m["text"] for m in all_pages(api, t["fc"], f"/v1/conversations/{dst1}/messages")] == ["s0", "s1"]
    # A forward of a forward still names the original.
    again = ok(api.call("POST", f"/v1/conversations/{dst1}/forward", t["fc"], {"message_ids": [copy["id"]], "to": [elsewhere]}))
    assert again["forwarded"][0]["messages"][0]["forwarded_from"]["message_id"] == sent[0]["id"]
    before = len(all_pages(api, t["fa"], f"/v1/conversations/{dst2}/messages"))
    ids = [str(uuid.uuid4()) for _ in range(11)]
    for body, status, detail in [
            ({"message_ids": ids, "to": [dst1]}, 400, "at most 10 messages"),
            ({"message_ids": [sent[0]["id"]], "to": [str(uuid.uuid4()) for _ in range(6)]}, 400, "at most 5 target"),
            ({"message_ids": [], "to": [dst1]}, 400, "non-empty"),
            ({"message_ids": [sent[0]["id"]], "to": [dst2, elsewhere]}, 404, "no such conversation"),
            ({"message_ids": [ids[0]], "to": [dst2]}, 400, "not in this conversation")]:
        problem(api.call("POST", f"/v1/conversations/{src}/forward", t["fa"], body), status, detail)
    assert len(all_pages(api, t["fa"], f"/v1/conversations/{dst2}/messages")) == before  # nothing forwarded
    assert api.call("DELETE", msgs_path(src, f"/{sent[2]['id']}"), t["fb"]).status_code == 204
    problem(api.call("POST", f"/v1/conversations/{src}/forward", t["fa"], {"message_ids": [sent[2]["id"]], "to": [dst1]}),
            400, "cannot be forwarded")


def test_pins(api, tenant):
    t = users(api, tenant, "pa", "pb")
    g = create(api, t["pa"], "group", ["pb"])["id"]
    ms = [ok(send(api, t["pb"], g, f"p{k}")) for k in range(3)]
    problem(api.call("POST", msgs_path(g, f"/{ms[0]['id']}/pin"), t["pb"]), 403, "only owners and admins pin")
    for m in ms:
        p = ok(api.call("POST", msgs_path(g, f"/{m['id']}/pin"), t["pa"]), 200)
        assert p["pinned"] is True and p["pinned_by"] == "pa"
        time.sleep(0.005)
    ok(api.call("DELETE", msgs_path(g, f"/{ms[1]['id']}/pin"), t["pa"]), 200)
    assert [m["text"] for m in all_pages(api, t["pb"], f"/v1/conversations/{g}/pins", "?limit=1")] == ["p2", "p0"]
    d = create(api, t["pa"], "direct", ["pb"])["id"]
    m = ok(send(api, t["pa"], d, "pin me"))
    assert ok(api.call("POST", msgs_path(d, f"/{m['id']}/pin"), t["pb"]), 200)["pinned"] is True  # anyone in direct
    problem(api.call("GET", f"/v1/conversations/{g}/pins?cursor=nope", t["pa"]), 400, "cursor")


def test_message_events_on_kafka(api, tenant, mongo):
    t0 = int(time.time() * 1000) - 1000
    t = users(api, tenant, "ka", "kb")
    cid = create(api, t["ka"], "group", ["kb"])["id"]
    m = ok(send(api, t["ka"], cid, "hello", mentions=["kb"]))
    ok(api.call("PATCH", msgs_path(cid, f"/{m['id']}"), t["ka"], {"text": "hello!"}), 200)
    ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["kb"], {"emoji": "👍"}))
    ok(api.call("DELETE", msgs_path(cid, f"/{m['id']}/reactions/👍"), t["kb"]), 200)
    ok(api.call("POST", msgs_path(cid, f"/{m['id']}/pin"), t["ka"]), 200)
    ok(api.call("DELETE", msgs_path(cid, f"/{m['id']}/pin"), t["ka"]), 200)
    assert api.call("DELETE", msgs_path(cid, f"/{m['id']}?scope=for_me"), t["kb"]).status_code == 204
    assert api.call("DELETE", msgs_path(cid, f"/{m['id']}"), t["ka"]).status_code == 204
    want = ["message.created", "message.updated", "reaction.added", "reaction.removed", "message.pinned",
            "message.unpinned", "message.hidden", "message.deleted"]
    mine = lambda evs: [e for e in evs if e["subject"] == cid]
    evs = mine(read_events("messages", lambda evs: len(mine(evs)) >= len(want), t0))
    assert [e["type"] for e in evs] == want
    for e in evs:
        validate_event(e)
    assert [e["eseq"] for e in evs] == list(range(2, 2 + len(want)))
    assert evs[1]["data"]["text"] == "hello!" and evs[1]["data"]["edits"] == 1
    assert evs[2]["data"]["reactions"] == [{"emoji": "👍", "count": 1}] and evs[3]["data"]["reactions"] == []
    assert evs[6]["audience"] == "kb" and evs[6]["data"]["message_id"] == m["id"]
    assert evs[7]["data"]["deleted"] is True and evs[7]["data"]["text"] == "" and evs[7]["id"] != m["id"]
    # The log is the outbox: each entry is marked published once Kafka acknowledged it (one
    # {_id: {$in}} update a batch, every 500 ms), so the sweeper never publishes it again.
    unmarked = {"conversation_id": cid, "published": {"$ne": True}}
    deadline = time.time() + 10
    while mongo["events"].count_documents(unmarked) and time.time() < deadline:
        time.sleep(0.2)
    assert mongo["events"].count_documents(unmarked) == 0
    assert mongo["events"].count_documents({"conversation_id": cid, "published": True}) >= len(want)


def test_message_endpoints_are_404_for_non_members_and_other_tenants(api, tenant):
    t = users(api, tenant, "na", "nb", "nout")
    cid = create(api, t["na"], "group", ["nb"])["id"]
    m = ok(send(api, t["na"], cid, "private"))
    ok(api.call("POST", msgs_path(cid, f"/{m['id']}/reactions"), t["nb"], {"emoji": "👍"}))
    foreign = token_for(api, new_tenant(api), "na")  # the same user id in another tenant
    base = msgs_path(cid, f"/{m['id']}")
    calls = [("GET", base, None), ("PATCH", base, {"text": "x"}), ("DELETE", base, None),
             ("DELETE", base + "?scope=for_me", None), ("GET", base + "/history", None),
             ("GET", base + "/thread", None), ("GET", base + "/receipts", None),
             ("POST", base + "/reactions", {"emoji": "👎"}), ("DELETE", base + "/reactions/👍", None),
             ("POST", base + "/pin", None), ("DELETE", base + "/pin", None), ("POST", base + "/flags", {"reason": "x"}),
             ("GET", f"/v1/conversations/{cid}/pins", None), ("GET", f"/v1/conversations/{cid}/stats", None),
             ("POST", f"/v1/conversations/{cid}/read", {"seq": 1}), ("POST", f"/v1/conversations/{cid}/delivered", {"seq": 1}),
             ("POST", f"/v1/conversations/{cid}/forward", {"message_ids": [m["id"]], "to": [cid]})]
    for tok in (t["nout"], foreign):
        for method, path, body in calls:
            problem(api.call(method, path, tok, body), 404)
    got = ok(api.call("GET", base, t["nb"]), 200)
    assert (got["text"], got["reactions"], got.get("pinned")) == ("private", [{"emoji": "👍", "count": 1, "me": True}], None)


def test_sends_go_on_while_the_user_service_does_not_answer(api, tenant):
    """A messaging instance whose user service accepts connections and never answers: the first
    send waits for its tenant settings (2 s, then the defaults apply); the next ones within a
    second neither wait nor ask again (libcommon tenant.c, RETRY_MS). Before, every send asked
    and waited its 2 s."""
    silent = pysocket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    accepted, held = [], []

    def accept():
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never answered
            accepted.append(time.monotonic())

    threading.Thread(target=accept, daemon=True).start()
    t = users(api, tenant, "sa", "sb")
    cid = create(api, t["sa"], "group", ["sb"])["id"]
    extra = extra_service("messaging", 16, "messaging-silent-users-sends.log",
                          USER_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
    try:
        url = f"http://127.0.0.1:{extra.port}{msgs_path(cid)}"
        hdr = {"Authorization": f"Bearer {t['sa']}"}
        first = requests.post(url, json={"text": "m0"}, headers=hdr, timeout=30)
        assert first.status_code == 201, first.text
        t0 = time.monotonic()
        for i in range(1, 6):
            r = requests.post(url, json={"text": f"m{i}"}, headers=hdr, timeout=30)
            assert r.status_code == 201, r.text
        quick = time.monotonic() - t0
        asked = sum(1 for a in accepted if a >= t0)
        if quick < 1.0:  # all within the pause: none of them asked the user service
            assert asked == 0, (asked, quick)
        assert quick < 5, quick  # five sends, not five waits of 2 s
        assert [m["text"] for m in all_pages(api, t["sb"], msgs_path(cid))] == [f"m{i}" for i in range(6)]
    finally:
        extra.stop()
        silent.close()
        for c in held:
            c.close()
