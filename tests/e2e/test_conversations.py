"""Conversations and members through the gateway: types, get, update, delete, own settings,
list filters and pagination, members and roles, every rule of who may do what, the limits,
and the conversation.* / member.* events on Kafka."""

import time

from chat import all_pages, configured, create, ok, problem, send, validate_event
from conftest import new_tenant, read_events, token_for


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def path(cid, rest=""):
    return f"/v1/conversations/{cid}{rest}"


def test_types_and_get(api, tenant):
    t = users(api, tenant, "ga", "gb", "gc")
    d = create(api, t["ga"], "direct", ["gb"])
    assert d["type"] == "direct" and d["members"] == ["ga", "gb"] and d["member_count"] == 2
    assert d["role"] == "member"  # direct conversations have no roles
    g = create(api, t["ga"], "group", ["gb", "gc"], title="team", description="the team",
               image="0190a3b5-5e6f-7c30-a15a-4d9f6e7a8b92", metadata={"color": "blue", "n": [1, 2]})
    assert (g["title"], g["description"], g["metadata"], g["member_count"], g["role"]) == \
        ("team", "the team", {"color": "blue", "n": [1, 2]}, 3, "owner")
    assert "members" not in g
    ch = create(api, t["ga"], "channel", ["gb"], title="news")
    assert ch["type"] == "channel" and ch["members_can_post"] is False
    got = ok(api.call("GET", path(g["id"]), t["gc"]), 200)
    assert got["title"] == "team" and got["role"] == "member" and got["unread_count"] == 0
    r = api.call("POST", "/v1/conversations", t["ga"], {"type": "direct", "members": ["gb"]})
    assert r.status_code == 200 and r.json()["id"] == d["id"]


def test_not_found_for_non_members_other_tenants_and_bad_ids(api, tenant):
    t = users(api, tenant, "na", "nb", "nout")
    g = create(api, t["na"], "group", ["nb"], title="x")
    foreign = token_for(api, new_tenant(api), "na")
    for tok in (t["nout"], foreign):
        for method, rest, body in [("GET", "", None), ("PATCH", "", {"title": "y"}), ("DELETE", "", None),
                                   ("PATCH", "/me", {"archived": True}), ("POST", "/leave", None),
                                   ("GET", "/members", None), ("POST", "/members", {"user_ids": ["z"]}),
                                   ("PATCH", "/members/nb", {"role": "admin"}), ("DELETE", "/members/nb", None),
                                   ("GET", "/messages", None), ("POST", "/messages", {"text": "x"})]:
            problem(api.call(method, path(g["id"], rest), tok, body), 404)
    problem(api.call("GET", path("not-a-uuid"), t["na"]), 404)
    problem(api.call("GET", path("0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81"), t["na"]), 404)
    assert ok(api.call("GET", path(g["id"]), t["na"]), 200)["title"] == "x"  # nothing changed


def test_update_rules_and_system_message(api, tenant):
    t = users(api, tenant, "ua", "ub", "uc")
    g = create(api, t["ua"], "group", ["ub", "uc"], title="old")
    ok(api.call("PATCH", path(g["id"], "/members/ub"), t["ua"], {"role": "admin"}), 200)
    problem(api.call("PATCH", path(g["id"]), t["uc"], {"title": "mine"}), 403, "only owners and admins")
    u = ok(api.call("PATCH", path(g["id"]), t["ub"], {"title": "new", "description": "d", "metadata": {"k": 1}}), 200)
    assert (u["title"], u["description"], u["metadata"]) == ("new", "d", {"k": 1})
    last = u["last_message"]
    assert last["type"] == "system" and last["text"] == 'ub renamed the conversation to "new"'
    u = ok(api.call("PATCH", path(g["id"]), t["ua"], {"description": None, "metadata": None}), 200)
    assert "description" not in u and "metadata" not in u and u["title"] == "new"
    same = ok(api.call("PATCH", path(g["id"]), t["ua"], {"title": "new"}), 200)  # no change
    assert same["last_seq"] == u["last_seq"]
    d = create(api, t["ua"], "direct", ["ub"])
    problem(api.call("PATCH", path(d["id"]), t["ua"], {"metadata": {"x": 1}}), 403, "direct conversation cannot be changed")
    ch = create(api, t["ua"], "channel", ["ub"])
    ok(api.call("PATCH", path(ch["id"]), t["ua"], {"members_can_post": True}), 200)
    problem(api.call("PATCH", path(g["id"]), t["ua"], {"members_can_post": True}), 400, "for channels")


def test_bad_update_and_create_bodies(api, tenant):
    t = users(api, tenant, "ba")
    g = create(api, t["ba"], "group", [], title="t")
    for body, detail in [({"title": ""}, "'title'"), ({"title": "x" * 201}, "at most 200"),
                         ({"metadata": [1]}, "must be an object"), ({"metadata": {"x": "y" * 5000}}, "larger than 4096"),
                         ({"image": "not-a-media-id"}, "media id"), ({"owner": "me"}, "unknown field"),
                         ({"members_can_post": "yes"}, "boolean")]:
        problem(api.call("PATCH", path(g["id"]), t["ba"], body), 400, detail)
    for body, detail in [({"type": "group", "metadata": "x"}, "must be an object"),
                         ({"type": "direct", "members": ["b"], "description": "x"}, "no description"),
                         ({"type": "group", "members_can_post": True}, "for channels")]:
        problem(api.call("POST", "/v1/conversations", t["ba"], body), 400, detail)
    assert ok(api.call("GET", path(g["id"]), t["ba"]), 200)["title"] == "t"


def test_channel_posting_rule(api, tenant):
    t = users(api, tenant, "cha", "chb")
    ch = create(api, t["cha"], "channel", ["chb"], title="news")
    assert send(api, t["cha"], ch["id"], "from the owner").status_code == 201
    problem(send(api, t["chb"], ch["id"], "from a member"), 403, "only owners and admins post")
    ok(api.call("PATCH", path(ch["id"]), t["cha"], {"members_can_post": True}), 200)
    assert send(api, t["chb"], ch["id"], "now allowed").status_code == 201


def test_delete_makes_it_read_only_and_archived_for_everyone(api, tenant):
    t = users(api, tenant, "da", "db")
    g = create(api, t["da"], "group", ["db"], title="gone")
    assert send(api, t["db"], g["id"], "history").status_code == 201
    problem(api.call("DELETE", path(g["id"]), t["db"]), 403, "only an owner deletes")
    d = ok(api.call("DELETE", path(g["id"]), t["da"]), 200)
    assert d["deleted"] is True
    assert ok(api.call("DELETE", path(g["id"]), t["da"]), 200)["deleted"] is True  # again: same
    problem(send(api, t["db"], g["id"], "after"), 409, "deleted")
    problem(api.call("PATCH", path(g["id"]), t["da"], {"title": "x"}), 409, "deleted")
    problem(api.call("POST", path(g["id"], "/members"), t["da"], {"user_ids": ["dc"]}), 409, "deleted")
    assert [m["text"] for m in all_pages(api, t["db"], path(g["id"], "/messages"))][-1] == "history"
    assert g["id"] not in [c["id"] for c in all_pages(api, t["db"], "/v1/conversations")]
    assert g["id"] in [c["id"] for c in all_pages(api, t["db"], "/v1/conversations", "?archived=true")]
    direct = create(api, t["da"], "direct", ["db"])
    problem(api.call("DELETE", path(direct["id"]), t["da"]), 403, "archive it instead")


def test_own_settings_and_list_filters_with_pagination(api, tenant):
    t = users(api, tenant, "fa", "fb")
    ids = {}
    for i, kind in enumerate(["direct", "group", "group", "channel", "group"]):
        ids[i] = create(api, t["fa"], kind, ["fb"], **({"title": f"g{i}"} if kind != "direct" else {}))["id"]
        time.sleep(0.005)
    ok(api.call("PATCH", path(ids[1], "/me"), t["fa"], {"archived": True}), 200)
    m = ok(api.call("PATCH", path(ids[2], "/me"), t["fa"], {"muted_until": "2099-12-31T23:59:59Z"}), 200)
    assert m["muted_until"] == "2099-12-31T23:59:59.000Z" and m["archived"] is False
    listed = lambda q="": [c["id"] for c in all_pages(api, t["fa"], "/v1/conversations", q)]
    assert listed("?limit=2") == [ids[4], ids[3], ids[2], ids[0]]
    assert listed("?archived=true") == [ids[1]]
    assert listed("?muted=true") == [ids[2]]
    assert listed("?muted=false&limit=1") == [ids[4], ids[3], ids[0]]
    assert listed("?type=group") == [ids[4], ids[2]]
    assert listed("?type=channel") == [ids[3]]
    # fb's view is unaffected by fa's settings.
    assert len([c for c in all_pages(api, t["fb"], "/v1/conversations") if c["id"] in ids.values()]) == 5
    ok(api.call("PATCH", path(ids[1], "/me"), t["fa"], {"archived": False}), 200)
    ok(api.call("PATCH", path(ids[2], "/me"), t["fa"], {"muted_until": None}), 200)
    assert listed("?muted=true") == [] and listed("?archived=true") == []
    for q, detail in [("?archived=maybe", "archived"), ("?muted=1", "muted"), ("?type=dm", "type"),
                      ("?cursor=zzz", "cursor")]:
        problem(api.call("GET", "/v1/conversations" + q, t["fa"]), 400, detail)
    for body, detail in [({"muted_until": "tomorrow"}, "RFC 3339"), ({"archived": 1}, "boolean"), ({"x": 1}, "unknown")]:
        problem(api.call("PATCH", path(ids[0], "/me"), t["fa"], body), 400, detail)


def test_members_add_remove_roles_and_their_rules(api, tenant):
    t = users(api, tenant, "ma", "mb", "mc", "md", "me2")
    g = create(api, t["ma"], "group", ["mb", "mc"], title="team")
    problem(api.call("POST", path(g["id"], "/members"), t["mb"], {"user_ids": ["md"]}), 403, "only owners and admins add")
    added = ok(api.call("POST", path(g["id"], "/members"), t["ma"], {"user_ids": ["md", "mb", "md"]}), 200)
    assert added == {"added": ["md"], "member_count": 4}
    ok(api.call("PATCH", path(g["id"], "/members/mb"), t["ma"], {"role": "admin"}), 200)
    problem(api.call("PATCH", path(g["id"], "/members/mc"), t["mb"], {"role": "admin"}), 403, "only an owner changes roles")
    ok(api.call("PATCH", path(g["id"], "/members/mc"), t["ma"], {"role": "admin"}), 200)
    problem(api.call("DELETE", path(g["id"], "/members/mc"), t["mb"]), 403, "not other admins")
    problem(api.call("DELETE", path(g["id"], "/members/ma"), t["mb"]), 403, "owner cannot be removed")
    problem(api.call("DELETE", path(g["id"], "/members/mb"), t["md"]), 403, "only owners and admins remove")
    assert api.call("DELETE", path(g["id"], "/members/md"), t["mb"]).status_code == 204  # admin removes a member
    problem(api.call("DELETE", path(g["id"], "/members/md"), t["ma"]), 404, "no such member")
    # The last owner can neither step down nor leave while others stay.
    problem(api.call("PATCH", path(g["id"], "/members/ma"), t["ma"], {"role": "member"}), 409, "last owner")
    problem(api.call("POST", path(g["id"], "/leave"), t["ma"]), 409, "last owner")
    ok(api.call("PATCH", path(g["id"], "/members/mb"), t["ma"], {"role": "owner"}), 200)
    ok(api.call("PATCH", path(g["id"], "/members/ma"), t["ma"], {"role": "member"}), 200)  # steps down
    assert api.call("DELETE", path(g["id"], "/members/ma"), t["ma"]).status_code == 204  # leaves
    members = all_pages(api, t["mb"], path(g["id"], "/members"), "?limit=1")
    assert [(m["user_id"], m["role"]) for m in members] == [("mb", "owner"), ("mc", "admin")]
    problem(api.call("GET", path(g["id"]), t["ma"]), 404)  # gone for the one who left
    ok(api.call("POST", path(g["id"], "/members"), t["mb"], {"user_ids": ["ma"]}), 200)  # back
    assert ok(api.call("GET", path(g["id"]), t["ma"]), 200)["role"] == "member"
    texts = [m["text"] for m in all_pages(api, t["mb"], path(g["id"], "/messages")) if m["type"] == "system"]
    assert texts == ["ma added md", "mb removed md", "ma left", "mb added ma"]
    d = create(api, t["ma"], "direct", ["mb"])
    problem(api.call("POST", path(d["id"], "/members"), t["ma"], {"user_ids": ["mc"]}), 403, "exactly two")
    problem(api.call("POST", path(d["id"], "/leave"), t["ma"]), 403, "cannot be left")
    problem(api.call("PATCH", path(d["id"], "/members/mb"), t["ma"], {"role": "admin"}), 403, "no roles")
    for body, detail in [({"user_ids": []}, "non-empty"), ({"user_ids": ["bad id"]}, "user ids"),
                         ({"user_ids": [f"u{i}" for i in range(101)]}, "at most 100"), ({"users": ["x"]}, "unknown")]:
        problem(api.call("POST", path(g["id"], "/members"), t["mb"], body), 400, detail)
    problem(api.call("PATCH", path(g["id"], "/members/mc"), t["mb"], {"role": "king"}), 400, "'role'")
    problem(api.call("GET", path(g["id"], "/members?cursor=bad id"), t["mb"]), 400, "cursor")


def test_member_limits(api, tenant, platform):
    # group_member_max is the tenant's setting (user service); channels have a platform limit.
    from conftest import ADMIN_KEY
    r = api.call("PATCH", f"/v1/tenants/{tenant['id']}", body={"settings": {"group_member_max": 3}},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    with configured(platform, CHANNEL_MEMBER_MAX=4):
        t = users(api, tenant, "la", "lb", "lc", "ld", "le")
        g = create(api, t["la"], "group", ["lb"])
        r = ok(api.call("POST", path(g["id"], "/members"), t["la"], {"user_ids": ["lc", "ld"]}), 200)
        assert r == {"added": ["lc"], "member_count": 3}  # what fits
        problem(api.call("POST", path(g["id"], "/members"), t["la"], {"user_ids": ["le"]}), 409, "at most 3 members")
        problem(api.call("POST", "/v1/conversations", t["la"], {"type": "group", "members": ["lb", "lc", "ld"]}),
                400, "at most 3 members")
        ch = create(api, t["la"], "channel", ["lb", "lc", "ld"])
        problem(api.call("POST", path(ch["id"], "/members"), t["la"], {"user_ids": ["le"]}), 409, "at most 4 members")


def test_conversation_and_member_events_on_kafka(api, tenant):
    t0 = int(time.time() * 1000) - 1000
    t = users(api, tenant, "ka", "kb", "kc")
    g = create(api, t["ka"], "group", ["kb"], title="ev")
    ok(api.call("PATCH", path(g["id"]), t["ka"], {"title": "ev2"}), 200)
    ok(api.call("POST", path(g["id"], "/members"), t["ka"], {"user_ids": ["kc"]}), 200)
    ok(api.call("PATCH", path(g["id"], "/members/kc"), t["ka"], {"role": "admin"}), 200)
    ok(api.call("PATCH", path(g["id"], "/me"), t["kb"], {"archived": True}), 200)
    assert api.call("DELETE", path(g["id"], "/members/kc"), t["ka"]).status_code == 204
    ok(api.call("DELETE", path(g["id"]), t["ka"]), 200)
    want = ["conversation.created", "conversation.updated", "member.added", "member.role_changed",
            "member.updated", "member.removed", "conversation.deleted"]
    mine = lambda evs: [e for e in evs if e["subject"] == g["id"]]
    conv_events = mine(read_events("conversations", lambda evs: len(mine(evs)) >= len(want), t0))
    msg_events = mine(read_events("messages", lambda evs: len(mine(evs)) >= 3, t0))
    assert [e["type"] for e in conv_events] == want
    for e in conv_events + msg_events:
        validate_event(e)
        assert e["_key"] == g["id"] and e["tenant"] == tenant["id"]
    # One log across both topics: eseqs 1..n, each once.
    assert sorted(e["eseq"] for e in conv_events + msg_events) == list(range(1, len(conv_events) + len(msg_events) + 1))
    assert conv_events[0]["id"] == g["id"] and conv_events[0]["eseq"] == 1
    assert {m["user_id"]: m["role"] for m in conv_events[0]["data"]["initial_members"]} == {"ka": "owner", "kb": "member"}
    assert conv_events[1]["data"]["changed"] == ["title"] and conv_events[1]["data"]["title"] == "ev2"
    upd = conv_events[4]
    assert upd["audience"] == "kb" and upd["data"]["archived"] is True
    assert [(e["type"], e["data"]["type"], e["data"]["text"]) for e in msg_events] == [
        ("message.created", "system", 'ka renamed the conversation to "ev2"'),
        ("message.created", "system", "ka added kc"), ("message.created", "system", "ka removed kc")]
