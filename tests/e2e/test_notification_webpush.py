"""Web push end to end (issue 10): a browser's subscription (endpoint, keys.p256dh, keys.auth)
is registered as a device; an offline recipient's notification reaches the subscription's
endpoint (a local push service stand-in on base+28) encrypted per RFC 8291 (decrypted here
with the subscription's private key as a browser would) with a VAPID Authorization whose
ES256 JWT verifies against the configured key (RFC 8292); 410 Gone prunes the subscription;
an endpoint on a non-public address (the canary on 127.0.0.2, not allowed) receives nothing;
and what a push says comes from the tenant's push templates."""

import json
import secrets
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from chat import create, ok, problem, send
from conftest import DB_SUFFIX, PORTS, new_tenant, token_for
from webpush_service import PushService, b64u, unb64u

SUBJECT = "mailto:push-ops@example.test"


@pytest.fixture(scope="module")
def pushsvc(platform, tmp_path_factory):
    """The push service on 127.0.0.1 (allowed by WEBHOOK_ALLOW_PRIVATE_CIDRS) and a canary on
    127.0.0.2 (loopback too, not allowed), and the notification service restarted with a
    VAPID key and short retry delays."""
    svc_dir = tmp_path_factory.mktemp("webpush")
    push = PushService("127.0.0.1", PORTS["notification"] + 8, svc_dir).start()
    canary = PushService("127.0.0.2", PORTS["notification"] + 9, tmp_path_factory.mktemp("canary")).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env["NOTIFY_GROUP"] = f"e2e-notification-{DB_SUFFIX}-webpush"
    svc.env.update({"WEBPUSH_VAPID_KEY_FILE": str(push.vapid_file), "WEBPUSH_VAPID_SUBJECT": SUBJECT,
                    "WEBPUSH_TTL_S": "3600", "WEBHOOK_ALLOW_PRIVATE_CIDRS": "127.0.0.1/32",
                    "PUSH_RETRY_DELAYS_MS": "300,600,900"})
    svc.start()
    yield push, canary
    push.stop()
    canary.stop()


@pytest.fixture
def pair(api, tenant):
    return tenant, {u: token_for(api, tenant, u) for u in ("ann", "bob")}


def register(api, user_token, sub, **extra):
    return ok(api.call("POST", "/v1/devices", user_token, {"platform": "webpush", "subscription": sub.json(), **extra}),
              200, 201)


def pushed_about(push, sub, mid, timeout=30.0):
    """The decrypted payload of the push to `sub` about message `mid` (being added to a
    conversation is pushed too)."""
    deadline = time.time() + timeout
    while True:
        for r in push.to(sub):
            p = json.loads(sub.decrypt(r["body"]))
            if p["data"].get("message_id") == mid:
                return p
        assert time.time() < deadline, f"no push about {mid}"
        time.sleep(0.05)


def deliveries(api, token, mid, until, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        items = ok(api.call("GET", "/v1/notifications?limit=100", token))["items"]
        n = next((x for x in items if x.get("message_id") == mid), None)
        if n:
            dl = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", token))["items"]
            if until(dl):
                return n, dl
        assert time.time() < deadline, items
        time.sleep(0.1)


def test_subscriptions_are_registered_and_checked(api, pair, pushsvc):
    push, _ = pushsvc
    _, t = pair
    sub = push.subscribe()
    r = api.call("POST", "/v1/devices", t["bob"], {"platform": "webpush", "subscription": sub.json()})
    assert r.status_code == 201, r.text
    dev = r.json()
    assert dev["platform"] == "webpush" and dev["token"] == sub.endpoint
    # The same subscription again is the same device; the keys are not shown back.
    again = register(api, t["bob"], sub, token=sub.endpoint)
    assert again["id"] == dev["id"] and "subscription" not in again
    bad = sub.json()
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "webpush"}), 400, "subscription")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "webpush", "token": sub.endpoint}), 400,
            "subscription")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "webpush", "subscription": bad,
                                                        "token": "other"}), 400, "token")
    problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": "x", "subscription": bad}),
            400, "subscription")
    for field, value, part in (("endpoint", "ftp://push.example/x", "subscription.endpoint"),
                               ("endpoint", "https://a b/x", "subscription.endpoint"),
                               ("endpoint", 7, "subscription.endpoint"),
                               ("p256dh", b64u(b"\x04" + b"\x01" * 64), "subscription.keys.p256dh"),
                               ("p256dh", "not base64!", "subscription.keys.p256dh"),
                               ("auth", b64u(b"short"), "subscription.keys.auth"),
                               ("extra", 1, "subscription.extra")):
        s = json.loads(json.dumps(bad))
        if field in ("p256dh", "auth"):
            s["keys"][field] = value
        else:
            s[field] = value
        problem(api.call("POST", "/v1/devices", t["bob"], {"platform": "webpush", "subscription": s}), 400, part)
    assert [d["id"] for d in ok(api.call("GET", "/v1/devices", t["bob"]))["items"]] == [dev["id"]]


def test_an_offline_user_gets_an_encrypted_web_push_with_vapid(api, pair, pushsvc):
    push, _ = pushsvc
    _, t = pair
    sub = push.subscribe()
    dev = register(api, t["bob"], sub)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "encrypted hello ✉"))["id"]
    got = push.wait(sub)
    assert len(got) == 1
    req = got[0]
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert h["content-encoding"] == "aes128gcm"
    assert h["ttl"] == "3600"
    # The body is opaque without the subscription's private key; with it, the payload.
    assert b"encrypted hello" not in req["body"]
    payload = json.loads(sub.decrypt(req["body"]))
    assert payload["notification"] == {"title": "ann", "body": "encrypted hello ✉"}
    assert payload["data"]["message_id"] == mid and payload["data"]["conversation_id"] == cid
    assert payload["data"]["type"] == "message" and payload["data"]["actor_id"] == "ann"
    # VAPID (RFC 8292): "vapid t=<JWT>, k=<the application server's public key>".
    scheme, _, params = h["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    vapid_pub = push.vapid.public_key()
    assert unb64u(fields["k"]) == vapid_pub.public_bytes(serialization.Encoding.X962,
                                                         serialization.PublicFormat.UncompressedPoint)
    claims = jwt.decode(fields["t"], vapid_pub, algorithms=["ES256"], audience=push.base,
                        options={"require": ["aud", "exp", "sub"]})
    assert claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    # The delivery records the push service's 201.
    n, dl = deliveries(api, t["bob"], mid, lambda d: d and d[0]["state"] == "sent")
    assert dl[0]["platform"] == "webpush" and dl[0]["device_id"] == dev["id"]
    assert [(a["attempt"], a["outcome"], a["status"]) for a in dl[0]["attempts"]] == [(1, "sent", 201)]
    # Each message has its own salt and ephemeral key.
    mid2 = ok(send(api, t["ann"], cid, "again"))["id"]
    second = push.wait(sub, 2)[1]
    assert second["body"][:16] != req["body"][:16] and second["body"][21:86] != req["body"][21:86]
    assert json.loads(sub.decrypt(second["body"]))["data"]["message_id"] == mid2


def test_a_gone_subscription_is_pruned(api, pair, pushsvc):
    push, _ = pushsvc
    _, t = pair
    gone, live = push.subscribe(), push.subscribe()
    push.fail[gone.endpoint.rsplit("/", 1)[1]] = 410
    d_gone, d_live = register(api, t["bob"], gone), register(api, t["bob"], live)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "one browser unsubscribed"))["id"]
    push.wait(gone)
    push.wait(live)
    _, dl = deliveries(api, t["bob"], mid, lambda d: len(d) == 2 and all(x["state"] != "queued" for x in d))
    by = {x["device_id"]: x for x in dl}
    assert by[d_gone["id"]]["state"] == "failed" and by[d_gone["id"]]["attempts"][0]["outcome"] == "dead_token"
    assert by[d_live["id"]]["state"] == "sent"
    deadline = time.time() + 10
    while [x["id"] for x in ok(api.call("GET", "/v1/devices", t["bob"]))["items"]] != [d_live["id"]]:
        assert time.time() < deadline
        time.sleep(0.1)
    d = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id=bob&message_id={mid}", t["bob"]))
    assert ("dead_token", d_gone["id"]) in {(x["decision"], x.get("device_id")) for x in d["decisions"]}


def test_an_endpoint_on_a_private_address_is_never_reached(api, pair, pushsvc):
    _, canary = pushsvc
    _, t = pair
    sub = canary.subscribe()
    register(api, t["bob"], sub)
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "to nowhere"))["id"]
    # Refused at connect time, each attempt: retried (0.3 s, 0.6 s, 0.9 s), then dead-lettered.
    _, dl = deliveries(api, t["bob"], mid, lambda d: d and d[0]["state"] == "dead_lettered")
    assert [a["outcome"] for a in dl[0]["attempts"]] == ["provider_error"] * 4
    assert "unreachable" in dl[0]["attempts"][0]["detail"]
    assert canary.to(sub) == []


def test_a_tenant_template_changes_what_the_push_says(api, pushsvc):
    """Push titles and bodies come from the tenant's templates of channel "push" (per kind
    and locale, falling back to the language, then "default", then the wording in code)."""
    from users_lib import server
    push, _ = pushsvc
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    t = {u: token_for(api, tenant, u) for u in ("ann", "bob", "cat", "root")}
    path = "/v1/notifications/templates/message/push"
    d = ok(api.call("GET", f"{path}/default", t["root"]))
    assert d == {"kind": "message", "channel": "push", "locale": "default", "title": "{{sender_name}}",
                 "text": "{{text}}", "source": "default"}
    problem(api.call("PUT", f"{path}/default", t["bob"], {"title": "x", "text": "y"}), 403)
    problem(api.call("PUT", "/v1/notifications/templates/verification/push/default", t["root"],
                     {"title": "x", "text": "y"}), 404, "not pushed")
    problem(api.call("PUT", f"{path}/default", t["root"], {"subject": "x", "text": "y"}), 400, "subject")
    problem(api.call("PUT", f"{path}/default", t["root"], {"title": "a\nb", "text": "y"}), 400, "one line")
    problem(api.call("PUT", f"{path}/default", t["root"], {"title": "{{nope}}", "text": "y"}), 400, "nope")
    problem(api.call("PUT", f"{path}/default", t["root"], {"text": "y"}), 400, "title")
    put = ok(api.call("PUT", f"{path}/default", t["root"], {"title": "{{sender_name}} says", "text": "« {{text}} »"}))
    assert put["source"] == "tenant" and put["title"] == "{{sender_name}} says"
    ok(api.call("PUT", f"{path}/fr", t["root"], {"title": "Nouveau message de {{sender_name}}", "text": "{{text}}"}))
    assert ok(api.call("GET", f"{path}/fr", t["root"]))["title"] == "Nouveau message de {{sender_name}}"
    ok(api.call("PUT", "/v1/notifications/contacts/bob", t["root"], {"locale": "fr-FR"}))
    subs = {u: push.subscribe() for u in ("bob", "cat")}
    for u, s in subs.items():
        register(api, t[u], s)
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    mid = ok(send(api, t["ann"], cid, "le déjeuner est prêt"))["id"]
    said = {u: pushed_about(push, s, mid) for u, s in subs.items()}
    assert said["bob"]["notification"] == {"title": "Nouveau message de ann", "body": "le déjeuner est prêt"}
    assert said["cat"]["notification"] == {"title": "ann says", "body": "« le déjeuner est prêt »"}
    assert said["cat"]["data"]["message_id"] == mid
    # Without the tenant's default template, the wording in code again (cat has no locale).
    assert api.call("DELETE", f"{path}/default", t["root"]).status_code == 204
    mid2 = ok(send(api, t["ann"], cid, "back to normal"))["id"]
    again = pushed_about(push, subs["cat"], mid2)
    assert again["notification"] == {"title": "ann", "body": "back to normal"}
    # Another tenant's templates are not this one's.
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    assert ok(api.call("GET", f"{path}/fr", token_for(api, other, "root")))["source"] == "default"
