"""GET /v1/sync through the gateway: a client that was away gets exactly what it missed, per
conversation in log order, gap-free and without duplicates, and rebuilds the server's state
from it; resets are explicit; cursors are per user and tenant-safe."""

import random

import requests

from chat import SyncClient, all_pages, create, ok, problem, send, server_view
from conftest import PORTS, new_tenant, token_for


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def test_now_cursor_then_a_new_conversation_arrives_as_a_reset(api, tenant):
    t = users(api, tenant, "sa", "sb")
    a = SyncClient(api, t["sa"], "sa")
    assert a.sync() == [] and a.cursor  # "now": a position, nothing to deliver
    conv = create(api, t["sb"], "group", ["sa"], title="plans")
    items = a.sync()
    assert [(i["type"], i["reason"], i["conversation_id"]) for i in items] == [("reset", "joined", conv["id"])]
    snap = items[0]["data"]
    assert snap["member"] is True and snap["conversation"]["title"] == "plans"
    assert snap["conversation"]["role"] == "member"
    assert sorted((m["user_id"], m["role"]) for m in snap["members"]) == [("sa", "member"), ("sb", "owner")]
    for k in range(3):
        assert send(api, t["sb"], conv["id"], f"m{k}").status_code == 201
    items = a.sync()
    assert [i["type"] for i in items] == ["message.created"] * 3
    assert [i["data"]["text"] for i in items] == ["m0", "m1", "m2"]
    eseqs = [i["eseq"] for i in items]
    assert eseqs == list(range(eseqs[0], eseqs[0] + 3)) and eseqs[0] == items[0]["eseq"]
    assert all(i["id"] == i["data"]["id"] for i in items)  # the event id is the message id
    before = a.cursor
    assert a.sync() == [] and a.cursor == before  # nothing new: the same position


def test_small_pages_keep_each_conversation_in_order(api, tenant):
    t = users(api, tenant, "pa", "pb", "pc")
    a = SyncClient(api, t["pa"], "pa")
    a.sync()
    convs = [create(api, t["pb"], "group", ["pa", "pc"], title=f"c{i}")["id"] for i in range(3)]
    a.sync()  # the three resets
    expected = {c: [] for c in convs}
    for k in range(12):
        c = convs[k % 3]
        expected[c].append(ok(send(api, t["pb" if k % 2 else "pc"], c, f"x{k}"))["seq"])
    pages, got = 0, {c: [] for c in convs}
    while True:
        r = ok(api.call("GET", f"/v1/sync?since={a.cursor}&limit=5", t["pa"]), 200)
        pages += 1
        assert len(r["items"]) <= 5
        for i in r["items"]:
            a.apply(i)  # asserts eseq order and no gap per conversation
            got[i["conversation_id"]].append(i["data"]["seq"])
        a.cursor = r["next_cursor"]
        if not r["has_more"]:
            break
    assert pages == 3 and got == expected


def test_own_settings_reach_only_their_owner(api, tenant):
    t = users(api, tenant, "oa", "ob")
    a, b = SyncClient(api, t["oa"], "oa"), SyncClient(api, t["ob"], "ob")
    conv = create(api, t["oa"], "group", ["ob"])
    a.sync(), b.sync()
    ok(api.call("PATCH", f"/v1/conversations/{conv['id']}/me", t["oa"],
                {"archived": True, "muted_until": "2099-01-01T00:00:00Z"}), 200)
    mine = a.sync()
    assert [i["type"] for i in mine] == ["member.updated"]
    assert mine[0]["data"] == {"conversation_id": conv["id"], "user_id": "oa", "archived": True,
                               "muted_until": "2099-01-01T00:00:00.000Z"}
    assert b.sync() == []  # ob's position moves past it without seeing it
    assert send(api, t["ob"], conv["id"], "after").status_code == 201
    assert [i["type"] for i in b.sync()] == ["message.created"]


def test_a_member_who_leaves_gets_up_to_their_removal_then_nothing(api, tenant):
    t = users(api, tenant, "la", "lb", "lc")
    a = SyncClient(api, t["la"], "la")
    conv = create(api, t["lb"], "group", ["la", "lc"])
    a.sync()
    assert send(api, t["lc"], conv["id"], "before").status_code == 201
    assert api.call("POST", f"/v1/conversations/{conv['id']}/leave", t["la"]).status_code == 204
    assert send(api, t["lc"], conv["id"], "after I left").status_code == 201
    items = a.sync()
    assert [(i["type"], i["data"].get("text")) for i in items] == [
        ("message.created", "before"), ("message.created", "la left"), ("member.removed", None)]
    assert items[1]["data"]["type"] == "system"
    assert items[2]["data"]["user_id"] == "la" and items[2]["data"]["reason"] == "left"
    assert conv["id"] not in a.convs
    assert a.sync() == []  # the conversation is no longer followed


def test_history_behind_the_cursor_gone_is_an_explicit_reset(api, tenant, mongo):
    t = users(api, tenant, "ha", "hb")
    a = SyncClient(api, t["ha"], "ha")
    conv = create(api, t["hb"], "group", ["ha"], title="old")
    a.sync()
    for k in range(4):
        assert send(api, t["hb"], conv["id"], f"h{k}").status_code == 201
    # What the retention job does: drop the oldest log entries and raise the floor.
    last = mongo.conversations.find_one({"_id": conv["id"]})["last_eseq"]
    mongo.events.delete_many({"conversation_id": conv["id"], "eseq": {"$lt": last - 1}})
    mongo.conversations.update_one({"_id": conv["id"]}, {"$set": {"log_floor": last - 1}})
    items = a.sync()
    assert [(i["type"], i.get("reason")) for i in items] == [("reset", "history_expired")]
    assert items[0]["eseq"] == last
    assert [m["text"] for m in a.convs[conv["id"]]["messages"].values()] == ["h0", "h1", "h2", "h3"]
    assert send(api, t["hb"], conv["id"], "new").status_code == 201
    assert [i["data"]["text"] for i in a.sync()] == ["new"]


def test_bad_cursors_and_limits(api, tenant):
    t = users(api, tenant, "ca")
    for bad in ["garbage!", "AAAA", "Ag", "AQE"]:
        problem(api.call("GET", f"/v1/sync?since={bad}", t["ca"]), 400, "cursor")
    problem(api.call("GET", "/v1/sync?limit=abc", t["ca"]), 400, "limit")
    problem(api.call("POST", "/v1/sync", t["ca"], {"since": 5}), 400, "'since'")
    problem(api.call("POST", "/v1/sync", t["ca"], {"cursor": "x"}), 400, "unknown field")
    problem(api.call("GET", "/v1/sync"), 401)
    r = ok(api.call("GET", "/v1/sync?limit=100000", t["ca"]), 200)  # clamped, not refused
    assert r["items"] == [] and r["has_more"] is False


def test_cursors_cannot_reach_other_tenants_or_non_members(api, tenant):
    t = users(api, tenant, "ta", "tb", "tout")
    conv = create(api, t["ta"], "group", ["tb"], title="private")
    a = SyncClient(api, t["ta"], "ta")
    a.sync()
    assert send(api, t["ta"], conv["id"], "secret").status_code == 201
    # Someone else presenting ta's cursor gets only their own conversations.
    outsider = SyncClient(api, t["tout"], "tout")
    outsider.cursor = a.cursor
    assert outsider.sync() == []
    other = new_tenant(api)
    foreign = SyncClient(api, token_for(api, other, "ta"), "ta")  # same user id, other tenant
    foreign.cursor = a.cursor
    assert foreign.sync() == []
    assert [i["data"]["text"] for i in a.sync()] == ["secret"]


def test_post_sync_for_long_cursors_answers_like_get(api, tenant):
    t = users(api, tenant, "qa", "qb")
    a = SyncClient(api, t["qa"], "qa")
    a.sync(method="POST")
    convs = [create(api, t["qb"], "direct" if i == 0 else "group", ["qa"])["id"] for i in range(3)]
    items = a.sync(method="POST")
    assert sorted(i["conversation_id"] for i in items) == sorted(convs)
    assert send(api, t["qb"], convs[0], "post").status_code == 201
    assert [i["data"]["text"] for i in a.sync(method="POST")] == ["post"]


def test_service_refuses_sync_without_a_valid_token_directly(api):
    r = requests.get(f"http://127.0.0.1:{PORTS['messaging']}/v1/sync")
    problem(r, 401)


def test_outage_with_hundreds_of_mixed_events_rebuilds_the_server_state(api, tenant):
    """The client syncs, goes away while ten conversations change in every way the API offers,
    then catches up in pages: its rebuilt state equals what the REST API returns."""
    rnd = random.Random(7)
    names = ["me"] + [f"u{i}" for i in range(6)]
    t = users(api, tenant, *names)
    me = SyncClient(api, t["me"], "me")
    me.sync()
    convs = []
    for i in range(10):
        owner = names[1 + i % 6]
        kind = "direct" if i < 3 else ("channel" if i == 9 else "group")
        others = ["me"] if kind == "direct" else ["me"] + [n for n in names[1:] if n != owner][:3]
        c = create(api, t[owner], kind, others, **({"title": f"room {i}"} if kind != "direct" else {}))
        convs.append((c["id"], kind, owner))
    me.sync()  # ten resets: the client knows the conversations
    assert len(me.convs) == 10
    # The outage: nothing is synced while the conversations change.
    done, sent, posted = 0, {n: 0 for n in names}, []  # posted: [cid, id, sender, deleted]
    emojis = ["👍", "🎉", "❤️"]
    while done < 300:
        cid, kind, owner = rnd.choice(convs)
        members = [m["user_id"] for m in all_pages(api, t[owner], f"/v1/conversations/{cid}/members")]
        here = [p for p in posted if p[0] == cid and not p[3]]
        roll = rnd.random()
        if kind == "direct" or roll < 0.40 or not here:
            # Senders stay under the per-user rate limit (60 a minute).
            senders = [m for m in members if (kind != "channel" or m == owner) and sent[m] < 55]
            if not senders:
                continue
            sender = rnd.choice(senders)
            sent[sender] += 1
            extra = {}
            if here and rnd.random() < 0.3:
                root = rnd.choice([p for p in here if p[4] is None] or here)
                extra = {"thread_root": root[1]} if root[4] is None else {"reply_to": root[1]}
            if rnd.random() < 0.2 and len(members) > 1:
                extra["mentions"] = [rnd.choice([m for m in members if m != sender])]
            r = send(api, t[sender], cid, f"{done}: {rnd.random():.6f}", **extra)
            assert r.status_code == 201, r.text
            posted.append([cid, r.json()["id"], sender, False, r.json().get("thread_root")])
        elif roll < 0.48:
            p = rnd.choice(here)
            if p[2] in members:
                ok(api.call("PATCH", f"/v1/conversations/{cid}/messages/{p[1]}", t[p[2]], {"text": f"edited {done}"}), 200)
        elif roll < 0.56:
            p, who = rnd.choice(here), rnd.choice(members)
            if rnd.random() < 0.5:
                ok(api.call("POST", f"/v1/conversations/{cid}/messages/{p[1]}/reactions", t[who],
                            {"emoji": rnd.choice(emojis)}))
            else:
                api.call("DELETE", f"/v1/conversations/{cid}/messages/{p[1]}/reactions/{rnd.choice(emojis)}", t[who])
        elif roll < 0.60:
            p = rnd.choice(here)
            if p[2] in members:
                assert api.call("DELETE", f"/v1/conversations/{cid}/messages/{p[1]}", t[p[2]]).status_code == 204
                p[3] = True
        elif roll < 0.63:
            assert api.call("DELETE", f"/v1/conversations/{cid}/messages/{rnd.choice(here)[1]}?scope=for_me",
                            t["me"]).status_code == 204
        elif roll < 0.67:
            p = rnd.choice(here)
            ok(api.call(rnd.choice(["POST", "DELETE"]), f"/v1/conversations/{cid}/messages/{p[1]}/pin", t[owner]), 200)
        elif roll < 0.70:
            targets = [c for c in convs if c[0] != cid and c[1] != "channel"]
            p = rnd.choice(here)
            if sent["me"] < 55:
                sent["me"] += 1
                to = rnd.choice(targets)
                r = api.call("POST", f"/v1/conversations/{cid}/forward", t["me"], {"message_ids": [p[1]], "to": [to[0]]})
                assert r.status_code == 201, r.text
                posted.append([to[0], r.json()["forwarded"][0]["messages"][0]["id"], "me", False, None])
        elif roll < 0.77:
            r = api.call("PATCH", f"/v1/conversations/{cid}", t[owner],
                         {"title": f"renamed {done}", "metadata": {"n": done}})
            ok(r, 200)
        elif roll < 0.83:
            outside = [n for n in names[1:] if n not in members]
            if outside:
                ok(api.call("POST", f"/v1/conversations/{cid}/members", t[owner],
                            {"user_ids": [rnd.choice(outside)]}), 200)
        elif roll < 0.88:
            victims = [m for m in members if m not in (owner, "me")]
            if victims:
                r = api.call("DELETE", f"/v1/conversations/{cid}/members/{rnd.choice(victims)}", t[owner])
                assert r.status_code == 204, r.text
        elif roll < 0.92:
            targets = [m for m in members if m != owner]
            if targets:
                ok(api.call("PATCH", f"/v1/conversations/{cid}/members/{rnd.choice(targets)}", t[owner],
                            {"role": rnd.choice(["admin", "member"])}), 200)
        elif roll < 0.97:
            who = rnd.choice(members)
            last = ok(api.call("GET", f"/v1/conversations/{cid}", t[who]), 200)["last_seq"]
            ok(api.call("POST", f"/v1/conversations/{cid}/{rnd.choice(['read', 'delivered'])}", t[who],
                        {"seq": rnd.randint(0, last)}), 200)
        else:
            ok(api.call("PATCH", f"/v1/conversations/{cid}/me", t["me"],
                        {"archived": rnd.random() < 0.5,
                         "muted_until": rnd.choice([None, "2099-01-01T00:00:00Z"])}), 200)
        done += 1
    # Back online: catch up in pages of 40.
    items = me.sync(limit=40)
    assert len(items) >= 250, len(items)
    types = {i["type"] for i in items}
    assert {"message.created", "message.updated", "message.deleted", "message.hidden", "reaction.added",
            "message.pinned", "conversation.updated", "member.added", "member.removed",
            "member.role_changed", "member.updated", "conversation.read", "message.delivered"} <= types, types
    assert {i["conversation_id"] for i in items} <= {c[0] for c in convs}
    assert not [i for i in items if i["type"] == "reset"], "no history was lost: no reset"
    got, want = me.view(), server_view(api, t["me"])
    assert sorted(got) == sorted(want)
    for cid in want:
        for part in want[cid]:
            assert got[cid][part] == want[cid][part], f"conversation {cid}: {part} differs"
