"""Moderation through the gateway: the tenant's settings, blocklist (reject, mask), link
policy, mention cap, slow mode, flood and duplicate detection, bans and mutes with expiry,
flags resolved by moderators, and the pre-send hook called over real HTTP."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chat import all_pages, create, ok, problem, role_token, send
from conftest import new_tenant, token_for


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def settings(api, tenant, **body):
    return ok(api.call("PUT", "/v1/moderation/settings", role_token(tenant["id"], "boss", "admin"), body), 200)


def test_settings_are_for_admins_and_validated(api):
    tenant = new_tenant(api)
    member, mod = token_for(api, tenant, "plain"), role_token(tenant["id"], "mod", "moderator")
    problem(api.call("GET", "/v1/moderation/settings", member), 403, "admins and moderators")
    got = ok(api.call("GET", "/v1/moderation/settings", mod), 200)
    assert got == {"blocklist": [], "links": "allow", "allowed_domains": [], "mentions_max": 20, "flood_max": 0,
                   "flood_window_s": 10, "duplicate_window_s": 0, "hook": None}
    problem(api.call("PUT", "/v1/moderation/settings", mod, {"links": "block"}), 403, "only the tenant's admins")
    admin = role_token(tenant["id"], "boss", "admin")
    for body, detail in [({"links": "sometimes"}, "allow, block or allowlist"),
                         ({"blocklist": [{"text": "(x", "kind": "pattern"}]}, "compiles"),
                         ({"blocklist": [{"text": "x", "action": "burn"}]}, "reject or mask"),
                         ({"blocklist": ["x"]}, "object"),
                         ({"hook": {"url": "ftp://example.com", "secret": "s" * 16}}, "http or https"),
                         ({"hook": {"url": "http://x", "secret": "short"}}, "'secret'"),
                         ({"hook": {"url": "http://x", "secret": "s" * 16, "on_timeout": "maybe"}}, "accept or reject"),
                         ({"allowed_domains": ["bad domain"]}, "domain names"),
                         ({"mentions_max": 99}, "'mentions_max'"), ({"nope": 1}, "unknown field")]:
        problem(api.call("PUT", "/v1/moderation/settings", admin, body), 400, detail)
    saved = settings(api, tenant, links="allowlist", allowed_domains=["example.com"],
                     hook={"url": "http://127.0.0.1:9/h", "secret": "0123456789abcdef"})
    assert saved["hook"] == {"url": "http://127.0.0.1:9/h", "timeout_ms": 1500, "on_timeout": "accept", "secret_set": True}
    assert "secret" not in json.dumps(saved).replace("secret_set", "")


def test_blocklist_links_and_mention_cap(api):
    tenant = new_tenant(api)
    t = users(api, tenant, "ba", "bb")
    cid = create(api, t["ba"], "group", ["bb"])["id"]
    settings(api, tenant, blocklist=[{"text": "spam", "action": "reject"},
                                     {"text": "darn", "action": "mask"},
                                     {"text": "[0-9]{4}-[0-9]{4}", "kind": "pattern", "action": "mask"}],
             links="allowlist", allowed_domains=["example.com"], mentions_max=1)
    p = problem(send(api, t["ba"], cid, "buy SPAM today"), 422, "blocks (spam)")
    assert p["type"] == "urn:chat:problem:rejected"
    m = ok(send(api, t["ba"], cid, "darn, call 5555-1234"))
    assert m["text"] == "****, call *********"
    assert ok(api.call("GET", f"/v1/conversations/{cid}/messages/{m['id']}", t["bb"]), 200)["text"] == m["text"]
    problem(send(api, t["ba"], cid, "see https://evil.test/x"), 422, "links to evil.test")
    ok(send(api, t["ba"], cid, "docs at https://docs.example.com/a"))
    problem(send(api, t["ba"], cid, "hi both", mentions=["bb", "ba"]), 400, "at most 1 mentions")
    assert [x["text"] for x in all_pages(api, t["bb"], f"/v1/conversations/{cid}/messages")] == \
        ["****, call *********", "docs at https://docs.example.com/a"]


def test_slow_mode_flood_and_duplicates(api):
    tenant = new_tenant(api)
    t = users(api, tenant, "sa", "sb")
    cid = create(api, t["sa"], "group", ["sb"])["id"]
    problem(api.call("PATCH", f"/v1/conversations/{cid}", t["sb"], {"slow_mode_s": 2}), 403)
    assert ok(api.call("PATCH", f"/v1/conversations/{cid}", t["sa"], {"slow_mode_s": 2}), 200)["slow_mode_s"] == 2
    ok(send(api, t["sb"], cid, "first"))
    r = send(api, t["sb"], cid, "too soon")
    problem(r, 429, "slow mode")
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    ok(send(api, t["sa"], cid, "owners are exempt"))
    time.sleep(2.1)
    ok(send(api, t["sb"], cid, "later"))
    ok(api.call("PATCH", f"/v1/conversations/{cid}", t["sa"], {"slow_mode_s": 0}), 200)
    settings(api, tenant, flood_max=3, flood_window_s=10, duplicate_window_s=30)
    other = create(api, t["sa"], "direct", ["sb"])["id"]
    for k in range(3):
        ok(send(api, t["sb"], other, f"f{k}"))
    problem(send(api, t["sb"], other, "f3"), 429, "flood")
    third = create(api, t["sb"], "group", [])["id"]
    first = ok(send(api, t["sb"], third, "same words", client_msg_id="d-1"))
    retry = send(api, t["sb"], third, "same words", client_msg_id="d-1")
    assert retry.status_code == 200 and retry.json()["id"] == first["id"]  # a retry is no duplicate
    problem(send(api, t["sb"], third, "same words", client_msg_id="d-2"), 409, "duplicate")


def test_bans_and_mutes_with_expiry(api):
    tenant = new_tenant(api)
    t = users(api, tenant, "ma", "mb", "mc")
    mod = role_token(tenant["id"], "mod", "moderator")
    cid = create(api, t["ma"], "group", ["mb", "mc"])["id"]
    problem(api.call("POST", "/v1/moderation/sanctions", t["ma"], {"user_id": "mb", "kind": "mute"}), 403, "tenant-wide")
    problem(api.call("POST", "/v1/moderation/sanctions", t["mc"], {"user_id": "mb", "kind": "mute", "conversation_id": cid}), 403)
    s = ok(api.call("POST", "/v1/moderation/sanctions", mod, {"user_id": "mb", "kind": "mute", "reason": "calm down"}))
    assert (s["kind"], s["conversation_id"], s["until"], s["by"]) == ("mute", None, None, "mod")
    problem(send(api, t["mb"], cid, "hello?"), 403, "you are muted in this tenant")
    problem(api.call("POST", "/v1/conversations", t["mb"], {"type": "group"}), 403, "muted")
    assert api.call("POST", "/v1/moderation/sanctions/lift", mod, {"user_id": "mb", "kind": "mute"}).status_code == 204
    ok(send(api, t["mb"], cid, "back"))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    ok(api.call("POST", "/v1/moderation/sanctions", t["ma"], {"user_id": "mb", "kind": "mute", "conversation_id": cid, "until": until}))
    problem(send(api, t["mb"], cid, "x"), 403, "muted in this conversation until")
    listed = ok(api.call("GET", f"/v1/moderation/sanctions?conversation_id={cid}", t["ma"]), 200)["items"]
    assert [(x["user_id"], x["kind"]) for x in listed] == [("mb", "mute")]
    time.sleep(3.5)
    ok(send(api, t["mb"], cid, "expired"))
    # A ban from the conversation removes the member and keeps them out.
    ok(api.call("POST", "/v1/moderation/sanctions", t["ma"], {"user_id": "mc", "kind": "ban", "conversation_id": cid}))
    problem(send(api, t["mc"], cid, "x"), 404)
    added = ok(api.call("POST", f"/v1/conversations/{cid}/members", t["ma"], {"user_ids": ["mc"]}), 200)
    assert added["added"] == [] and added["banned"] == ["mc"]
    texts = [m["text"] for m in all_pages(api, t["ma"], f"/v1/conversations/{cid}/messages") if m["type"] == "system"]
    assert texts[-1] == "mc was banned"
    for body, detail in [({"user_id": "mb", "kind": "exile"}, "ban or mute"), ({"user_id": "mb", "kind": "ban", "until": "2000-01-01T00:00:00Z"}, "future"),
                         ({"user_id": "bad id", "kind": "ban"}, "user id")]:
        problem(api.call("POST", "/v1/moderation/sanctions", mod, body), 400, detail)
    problem(api.call("POST", "/v1/moderation/sanctions/lift", mod, {"user_id": "nobody", "kind": "ban"}), 404)


def test_flags_are_resolved_by_moderators(api):
    tenant = new_tenant(api)
    t = users(api, tenant, "fa", "fb", "fc")
    mod = role_token(tenant["id"], "mod", "moderator")
    cid = create(api, t["fa"], "group", ["fb", "fc"])["id"]
    bad = ok(send(api, t["fa"], cid, "something awful"))
    meh = ok(send(api, t["fa"], cid, "something meh"))
    f1 = ok(api.call("POST", f"/v1/conversations/{cid}/messages/{bad['id']}/flags", t["fb"], {"reason": "abuse"}))
    ok(api.call("POST", f"/v1/conversations/{cid}/messages/{bad['id']}/flags", t["fc"], {"reason": "also abuse"}))
    f3 = ok(api.call("POST", f"/v1/conversations/{cid}/messages/{meh['id']}/flags", t["fb"], {"reason": "meh"}))
    problem(api.call("POST", f"/v1/conversations/{cid}/messages/{bad['id']}/flags", t["fb"], {"reason": "again"}), 409, "already flagged")
    problem(api.call("POST", f"/v1/conversations/{cid}/messages/{bad['id']}/flags", t["fa"], {"reason": "me"}), 409, "own message")
    problem(api.call("GET", "/v1/moderation/flags", t["fb"]), 403)
    open_flags = all_pages(api, mod, "/v1/moderation/flags", "?limit=2")
    assert [(f["message_id"], f["reporter"]) for f in open_flags] == [(bad["id"], "fb"), (bad["id"], "fc"), (meh["id"], "fb")]
    assert open_flags[0]["message"]["text"] == "something awful" and f1["status"] == "open"
    r = ok(api.call("POST", f"/v1/moderation/flags/{f1['id']}/resolve", mod, {"action": "delete"}), 200)
    assert (r["status"], r["resolution"], r["resolved_by"]) == ("resolved", "delete", "mod")
    assert ok(api.call("GET", f"/v1/conversations/{cid}/messages/{bad['id']}", t["fb"]), 200)["deleted"] is True
    assert [f["message_id"] for f in all_pages(api, mod, "/v1/moderation/flags")] == [meh["id"]]  # both flags of bad resolved
    problem(api.call("POST", f"/v1/moderation/flags/{f1['id']}/resolve", mod, {"action": "dismiss"}), 409, "already resolved")
    ok(api.call("POST", f"/v1/moderation/flags/{f3['id']}/resolve", mod, {"action": "ban"}), 200)
    problem(send(api, t["fa"], cid, "still here?"), 403, "banned in this tenant")
    assert len(all_pages(api, mod, "/v1/moderation/flags", "?status=resolved")) == 3
    problem(api.call("POST", f"/v1/moderation/flags/{f3['id']}/resolve", mod, {"action": "shrug"}), 400, "dismiss, delete or ban")
    problem(api.call("POST", "/v1/moderation/flags/0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81/resolve", mod, {"action": "dismiss"}), 404)


class Hook(BaseHTTPRequestHandler):
    """The tenant's pre-send hook: checks the signature, then rejects, rewrites, stalls or
    accepts according to the text."""
    secret = b"0123456789abcdef-secret"
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ts, sig = self.headers["X-Chat-Timestamp"], self.headers["X-Chat-Signature"]
        want = "sha256=" + hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        msg = json.loads(body)
        Hook.seen.append((sig == want, abs(int(ts) - time.time()) < 60, msg))
        if "slow" in msg["text"]:
            time.sleep(1.0)
        verdict = ({"action": "reject", "reason": "not on my watch"} if "forbidden" in msg["text"] else
                   {"action": "rewrite", "text": msg["text"].replace("rude", "kind")} if "rude" in msg["text"] else
                   {"action": "accept"})
        out = json.dumps(verdict).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            pass  # the caller gave up (its time budget)

    def log_message(self, *args):
        pass


def test_pre_send_hook_signed_with_a_time_budget(api):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/check"
    try:
        tenant = new_tenant(api)
        t = users(api, tenant, "ha", "hb")
        cid = create(api, t["ha"], "direct", ["hb"])["id"]
        settings(api, tenant, hook={"url": url, "secret": Hook.secret.decode(), "timeout_ms": 300, "on_timeout": "accept"})
        Hook.seen.clear()
        assert ok(send(api, t["ha"], cid, "hello there"))["text"] == "hello there"
        problem(send(api, t["ha"], cid, "this is forbidden"), 422, "not on my watch")
        rewritten = ok(send(api, t["ha"], cid, "a rude remark", client_msg_id="r-1"))
        assert rewritten["text"] == "a kind remark"
        again = send(api, t["ha"], cid, "a rude remark", client_msg_id="r-1")  # a retry of what was sent
        assert again.status_code == 200 and again.json()["id"] == rewritten["id"]
        started = time.time()
        assert ok(send(api, t["ha"], cid, "slow but fine"))["text"] == "slow but fine"  # budget passed: accept
        assert time.time() - started < 1.0
        settings(api, tenant, hook={"url": url, "secret": Hook.secret.decode(), "timeout_ms": 300, "on_timeout": "reject"})
        r = send(api, t["ha"], cid, "slow and refused")
        problem(r, 503, "time budget")
        assert all(sig_ok and fresh for sig_ok, fresh, _ in Hook.seen), "every call signed and timestamped"
        first = Hook.seen[0][2]
        assert (first["tenant"], first["conversation_id"], first["sender_id"], first["type"]) == \
            (tenant["id"], cid, "ha", "text")
        texts = [m["text"] for m in all_pages(api, t["hb"], f"/v1/conversations/{cid}/messages")]
        assert texts == ["hello there", "a kind remark", "slow but fine"]
    finally:
        server.shutdown()
