"""Read and delivery receipts through the gateway: forward only (also under concurrency),
unread counts per conversation and in total, who read a message (per member up to 100 members,
counts above), and the events."""

import random
import time
from concurrent.futures import ThreadPoolExecutor

from chat import all_pages, configured, create, ok, problem, send, validate_event
from conftest import read_events, redis_cli, token_for


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def conv_of(api, token, cid):
    return ok(api.call("GET", f"/v1/conversations/{cid}", token), 200)


def test_read_moves_forward_only_and_unread_follows(api, tenant):
    t = users(api, tenant, "ra", "rb")
    cid = create(api, t["ra"], "group", ["rb"])["id"]
    for k in range(5):
        ok(send(api, t["ra"], cid, f"m{k}", **({"mentions": ["rb"]} if k in (1, 3) else {})))
    c = conv_of(api, t["rb"], cid)
    assert (c["unread_count"], c["unread_mentions"], c["read_seq"]) == (5, 2, 0)
    r = ok(api.call("POST", f"/v1/conversations/{cid}/read", t["rb"], {"seq": 2}), 200)
    assert (r["read_seq"], r["delivered_seq"], r["unread_count"], r["unread_mentions"]) == (2, 2, 3, 1)
    back = ok(api.call("POST", f"/v1/conversations/{cid}/read", t["rb"], {"seq": 1}), 200)
    assert (back["read_seq"], back["unread_count"]) == (2, 3)  # never backwards
    ok(api.call("POST", f"/v1/conversations/{cid}/delivered", t["rb"], {"seq": 5}), 200)
    c = conv_of(api, t["rb"], cid)
    assert (c["read_seq"], c["delivered_seq"]) == (2, 5)
    ok(api.call("POST", f"/v1/conversations/{cid}/delivered", t["rb"], {"seq": 3}), 200)
    assert conv_of(api, t["rb"], cid)["delivered_seq"] == 5
    problem(api.call("POST", f"/v1/conversations/{cid}/read", t["rb"], {"seq": 6}), 400, "beyond the conversation's last message (5)")
    for body, detail in [({}, "'seq' is required"), ({"seq": -1}, "'seq'"), ({"seq": "3"}, "'seq'"), ({"seq": 1, "x": 1}, "unknown")]:
        problem(api.call("POST", f"/v1/conversations/{cid}/read", t["rb"], body), 400, detail)
    problem(api.call("POST", f"/v1/conversations/{cid}/read", token_for(api, tenant, "stranger"), {"seq": 1}), 404)


def test_concurrent_receipts_never_move_back(api, tenant):
    t = users(api, tenant, "ca", "cb")
    cid = create(api, t["ca"], "direct", ["cb"])["id"]
    for k in range(15):
        ok(send(api, t["ca"], cid, f"m{k}"))
    seqs = list(range(1, 16)) * 2  # 30 at once: within the gateway's per-user burst (40)
    with ThreadPoolExecutor(12) as pool:
        rs = list(pool.map(lambda s: api.call("POST", f"/v1/conversations/{cid}/read", t["cb"], {"seq": s}), seqs))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200][:2]
    c = conv_of(api, t["cb"], cid)
    assert (c["read_seq"], c["unread_count"]) == (15, 0)


def test_total_unread_across_conversations(api, tenant):
    t = users(api, tenant, "ua", "ub", "uc")
    a = create(api, t["ua"], "direct", ["ub"])["id"]
    b = create(api, t["uc"], "group", ["ub"])["id"]
    m = create(api, t["uc"], "group", ["ub"])["id"]
    for k in range(3):
        ok(send(api, t["ua"], a, f"a{k}"))
    ok(send(api, t["uc"], b, "hey @ub", mentions=["ub"]))
    for k in range(4):
        ok(send(api, t["uc"], m, f"muted {k}"))
    ok(api.call("PATCH", f"/v1/conversations/{m}/me", t["ub"], {"muted_until": "2099-01-01T00:00:00Z"}), 200)
    assert ok(api.call("GET", "/v1/conversations/unread", t["ub"]), 200) == {
        "unread_count": 4, "conversations_with_unread": 2, "unread_mentions": 1, "muted_unread_count": 4}
    ok(api.call("POST", f"/v1/conversations/{a}/read", t["ub"], {"seq": 3}), 200)
    assert ok(api.call("GET", "/v1/conversations/unread", t["ub"]), 200)["unread_count"] == 1
    assert ok(api.call("GET", "/v1/conversations/unread", t["ua"]), 200)["unread_count"] == 0


def test_who_read_per_member_then_counts_above_100(api, tenant, platform):
    t = users(api, tenant, "wa", "wb", "wc")
    cid = create(api, t["wa"], "group", ["wb", "wc"])["id"]
    m1 = ok(send(api, t["wa"], cid, "one"))
    ok(send(api, t["wa"], cid, "two"))
    ok(api.call("POST", f"/v1/conversations/{cid}/read", t["wb"], {"seq": 2}), 200)
    ok(api.call("POST", f"/v1/conversations/{cid}/delivered", t["wc"], {"seq": 1}), 200)
    r = ok(api.call("GET", f"/v1/conversations/{cid}/messages/{m1['id']}/receipts", t["wc"]), 200)
    assert [x["user_id"] for x in r["read_by"]] == ["wb"] and sorted(r["delivered_to"]) == ["wb", "wc"]
    assert (r["read_count"], r["delivered_count"]) == (1, 2)
    # A channel of more than 100 members shows counts only.
    names = [f"big{i:03d}" for i in range(101)]
    for n in names[:3]:
        t[n] = token_for(api, tenant, n)
    ch = create(api, t["wa"], "channel", names[:50])["id"]
    ok(api.call("POST", f"/v1/conversations/{ch}/members", t["wa"], {"user_ids": names[50:]}), 200)
    msg = ok(send(api, t["wa"], ch, "to many"))
    for n in names[:3]:
        ok(api.call("POST", f"/v1/conversations/{ch}/read", t[n], {"seq": msg["seq"]}), 200)
    r = ok(api.call("GET", f"/v1/conversations/{ch}/messages/{msg['id']}/receipts", t["wa"]), 200)
    assert "read_by" not in r and (r["read_count"], r["delivered_count"]) == (3, 3)


def test_receipt_events(api, tenant):
    t0 = int(time.time() * 1000) - 1000
    t = users(api, tenant, "ea", "eb")
    cid = create(api, t["ea"], "group", ["eb"])["id"]
    ok(send(api, t["ea"], cid, "x"))
    ok(api.call("POST", f"/v1/conversations/{cid}/delivered", t["eb"], {"seq": 1}), 200)
    ok(api.call("POST", f"/v1/conversations/{cid}/read", t["eb"], {"seq": 1}), 200)
    ok(api.call("POST", f"/v1/conversations/{cid}/read", t["eb"], {"seq": 1}), 200)  # nothing new: no event
    mine = lambda evs: [e for e in evs if e["subject"] == cid and e["type"] in ("conversation.read", "message.delivered")]
    evs = mine(read_events("conversations", lambda evs: len(mine(evs)) >= 2, t0))
    time.sleep(1)
    evs = mine(read_events("conversations", lambda evs: len(mine(evs)) >= 3, t0, timeout=3))
    assert [e["type"] for e in evs] == ["message.delivered", "conversation.read"]
    for e in evs:
        validate_event(e)
        assert "audience" not in e  # small conversation: every member sees receipts
    assert evs[1]["data"]["read_seq"] == 1 and evs[1]["data"]["user_id"] == "eb"


def redis_hash(key):
    out = redis_cli("HGETALL", key)
    return dict(zip(out[0::2], out[1::2]))


def totals_from_conversations(api, token):
    """The totals summed from each conversation's own unread numbers (from MongoDB)."""
    t = {"unread_count": 0, "conversations_with_unread": 0, "unread_mentions": 0, "muted_unread_count": 0}
    for c in all_pages(api, token, "/v1/conversations", "?limit=200"):
        if c["muted_until"]:
            t["muted_unread_count"] += c["unread_count"]
        else:
            t["unread_count"] += c["unread_count"]
            t["conversations_with_unread"] += c["unread_count"] > 0
        t["unread_mentions"] += c["unread_mentions"]
    return t


def test_total_unread_is_kept_not_summed_and_equals_the_conversations(api, busy_tenant):
    """The total is a kept sum (O(1) to read): it must equal the per-conversation numbers through
    a random mix of sends, mentions, reads, mutes, leaves and re-adds, after a rebuild, and when
    a mute ends by itself. (busy_tenant: the mix is hundreds of calls by one user, faster than
    the gateway's default 20 a second.)"""
    tenant = busy_tenant
    t = users(api, tenant, "ka", "kb", "kc")
    key = f"unread:{tenant['id']}:ka"
    convs = [create(api, t["kb"], "direct", ["ka"])["id"],
             create(api, t["kb"], "group", ["ka", "kc"])["id"],
             create(api, t["kc"], "group", ["ka"])["id"],
             create(api, t["kb"], "channel", ["ka", "kc"], members_can_post=True)["id"]]
    total = lambda: ok(api.call("GET", "/v1/conversations/unread", t["ka"]), 200)  # noqa: E731
    assert total()["unread_count"] == 0
    assert redis_hash(key).get("v") == "1"  # built by the first read
    rnd = random.Random(7)
    left = set()
    for step in range(60):
        cid = rnd.choice(convs)
        op = rnd.random()
        if op < 0.5:
            sender = "kb" if cid != convs[2] else "kc"
            mention = ["ka"] if rnd.random() < 0.3 else []
            ok(send(api, t[sender], cid, f"m{step}", mentions=mention))
        elif op < 0.65 and cid not in left:
            seq = conv_of(api, t["ka"], cid)["last_seq"]
            ok(api.call("POST", f"/v1/conversations/{cid}/read", t["ka"], {"seq": rnd.randint(0, seq)}), 200)
        elif op < 0.75 and cid not in left:
            until = "2099-01-01T00:00:00Z" if rnd.random() < 0.6 else None
            ok(api.call("PATCH", f"/v1/conversations/{cid}/me", t["ka"], {"muted_until": until}), 200)
        elif op < 0.85 and cid not in left:
            ok(send(api, t["ka"], cid, f"own {step}"))
        elif cid in (convs[1], convs[3]):
            if cid in left:
                ok(api.call("POST", f"/v1/conversations/{cid}/members", t["kb"], {"user_ids": ["ka"]}), 200)
                left.discard(cid)
            else:
                assert api.call("POST", f"/v1/conversations/{cid}/leave", t["ka"]).status_code == 204
                left.add(cid)
        if step % 6 == 5:
            assert total() == totals_from_conversations(api, t["ka"]), f"step {step}"
    want = totals_from_conversations(api, t["ka"])
    assert total() == want and int(redis_hash(key)["total"]) == want["unread_count"]
    redis_cli("DEL", key)
    assert total() == want  # rebuilt from the member records
    # A mute that ends moves the conversation back without any write.
    for cid in convs:
        if cid not in left:
            ok(api.call("PATCH", f"/v1/conversations/{cid}/me", t["ka"], {"muted_until": None}), 200)
    ok(send(api, t["kb"], convs[0], "mute me"))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    ok(api.call("PATCH", f"/v1/conversations/{convs[0]}/me", t["ka"], {"muted_until": until}), 200)
    muted = total()
    assert muted["muted_unread_count"] >= 1
    time.sleep(4.2)
    after = total()
    assert after["muted_unread_count"] == 0
    assert after["unread_count"] == muted["unread_count"] + muted["muted_unread_count"]
    assert after == totals_from_conversations(api, t["ka"])
