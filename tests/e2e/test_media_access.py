"""Media access and housekeeping through the gateway: signed URLs (tampering, expiry, rotation,
other tenants), per-tenant limits and quotas, rate limits, deletion, the attachment check for
the messaging service, user.deleted and the message-media expiry job."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from confluent_kafka import Producer

from conftest import INTERNAL_HEADERS, KAFKA, MEDIA_URL_KEYS, PORTS, new_tenant, read_events, token_for
from media_util import admin_token, make_image, upload, wait_status
from test_media import media_db, problem
from users_lib import server

MEDIA = f"http://127.0.0.1:{PORTS['media']}"
KEYS = dict(k.split(":") for k in MEDIA_URL_KEYS.split(","))


@pytest.fixture
def users(api, tenant):
    return {"alice": token_for(api, tenant, "alice"), "bob": token_for(api, tenant, "bob")}


@pytest.fixture
def image(api, users, tmp_path):
    r = upload(api, users["alice"], make_image(tmp_path / "s", 200, 100))
    assert r.status_code == 201, r.text
    return wait_status(api, users["alice"], r.json()["id"])


def sign(tenant, media_id, variant, expires, kid):
    msg = f"GET\n{tenant}\n{media_id}\n{variant}\n{expires}\n{kid}".encode()
    mac = hmac.new(bytes.fromhex(KEYS[kid]), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_signed_url_works_without_authorization(api, tenant, users, image):
    r = api.call("GET", f"/v1/media/{image['id']}/url?variant=thumb_128&ttl=100000", token=users["alice"])
    assert r.status_code == 200, r.text
    body = r.json()
    exp = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert exp <= datetime.now(timezone.utc) + timedelta(seconds=901)  # clamped to 15 minutes
    got = requests.get(api.base + body["url"], timeout=10)  # no Authorization header
    assert got.status_code == 200, got.text
    auth = api.call("GET", f"/v1/media/{image['id']}/content?variant=thumb_128", token=users["alice"])
    assert got.content == auth.content and got.headers["Content-Type"] == "image/jpeg"
    assert got.headers["Cache-Control"].startswith("private, max-age=")
    assert int(got.headers["Cache-Control"].split("=")[1]) <= 900
    # Ranges work on signed URLs too.
    part = requests.get(api.base + body["url"], headers={"Range": "bytes=0-9"}, timeout=10)
    assert part.status_code == 206 and part.content == auth.content[:10]


def test_tampered_expired_and_foreign_signatures_are_403(api, tenant, users, image):
    url = api.call("GET", f"/v1/media/{image['id']}/url?variant=thumb_512", token=users["alice"]).json()["url"]
    u = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    tid, mid = tenant["id"], image["id"]

    def get(path, **over):
        params = dict(q, **over)
        return requests.get(api.base + path, params=params, timeout=10)

    assert get(u.path).status_code == 200
    sig = q["sig"]
    flipped = ("A" if sig[10] != "A" else "B").join([sig[:10], sig[11:]])
    problem(get(u.path, sig=flipped), 403, "bad-signature", "bad signature")
    problem(get(f"/v1/signed-media/{tid}/{mid}/original"), 403, "bad-signature")  # other variant
    problem(get(u.path, expires=str(int(q["expires"]) + 60)), 403, "bad-signature")
    problem(get(u.path, kid="nope"), 403, "bad-signature", "unknown key")
    problem(get(u.path, sig=""), 403, "bad-signature")
    other = new_tenant(api)
    problem(get(f"/v1/signed-media/{other['id']}/{mid}/thumb_512"), 403, "bad-signature")
    # Correctly signed but expired: 403; a valid signature by the rotated-out second key: 200.
    past = int(time.time()) - 5
    problem(get(u.path, expires=str(past), kid="t1", sig=sign(tid, mid, "thumb_512", past, "t1")),
            403, "bad-signature", "expired")
    soon = int(time.time()) + 60
    assert get(u.path, expires=str(soon), kid="t1", sig=sign(tid, mid, "thumb_512", soon, "t1")).status_code == 200
    # Too far ahead (a URL made to live for a day) is refused even when correctly signed.
    far = int(time.time()) + 86400
    problem(get(u.path, expires=str(far), kid="t2", sig=sign(tid, mid, "thumb_512", far, "t2")), 403)
    # A valid signature for an object of another tenant signed as ours cannot reach it: the
    # tenant is in the signed string and scopes the lookup.
    eve = token_for(api, other, "eve")
    r = upload(api, eve, b"%PDF-1.4\nsecret")
    assert r.status_code == 201
    exp = int(time.time()) + 60
    r2 = get(f"/v1/signed-media/{tid}/{r.json()['id']}/original", expires=str(exp), kid="t2",
             sig=sign(tid, r.json()["id"], "original", exp, "t2"))
    problem(r2, 404)


def test_settings_limits_quota_and_rate(api, tenant, users, tmp_path):
    admin = admin_token(tenant["id"])
    problem(api.call("PUT", "/v1/media/settings", token=users["alice"], body={"quota_bytes": 1}), 403)
    problem(api.call("PUT", "/v1/media/settings", token=admin, body={"quota_bytes": -1}), 400, "validation")
    problem(api.call("PUT", "/v1/media/settings", token=admin, body={"colour": "red"}), 400, "validation", "unknown field")
    problem(api.call("PUT", "/v1/media/settings", token=admin, body={"allowed_types": ["IMAGE/PNG"]}), 400)
    before = api.call("GET", "/v1/media/settings", token=admin).json()
    assert before["image_max_bytes"] == 5 * 1024 * 1024 and before["file_max_bytes"] == 100 * 1024 * 1024
    assert before["pixel_max"] == 50_000_000

    jpeg = make_image(tmp_path / "q", 300, 300)
    r = api.call("PUT", "/v1/media/settings", token=admin, body={"image_max_bytes": len(jpeg) - 1})
    assert r.status_code == 200 and r.json()["image_max_bytes"] == len(jpeg) - 1
    problem(upload(api, users["alice"], jpeg), 413, "too-large")
    # Files still get the file limit.
    assert upload(api, users["alice"], b"%PDF-1.4\n" + b"x" * len(jpeg)).status_code == 201
    # Allowlist per tenant: PDFs no longer accepted.
    r = api.call("PUT", "/v1/media/settings", token=admin,
                 body={"image_max_bytes": 5 << 20, "allowed_types": ["image/jpeg"]})
    assert r.json()["allowed_types"] == ["image/jpeg"]
    problem(upload(api, users["alice"], b"%PDF-1.4\nabc"), 415, "unsupported-media-type")

    # Quota: what is stored plus the new upload may not exceed it.
    used = sum(d["size"] for d in media_db().media.find({"tenant": tenant["id"], "status": {"$ne": "deleted"}}))
    api.call("PUT", "/v1/media/settings", token=admin, body={"quota_bytes": used + len(jpeg) + 10})
    assert upload(api, users["alice"], jpeg).status_code == 201
    p = problem(upload(api, users["alice"], jpeg), 413, "quota-exceeded")
    assert str(used + len(jpeg) + 10) in p["detail"]
    api.call("PUT", "/v1/media/settings", token=admin, body={"quota_bytes": 0})

    # Uploads per user per minute (Redis window): the third is 429 for alice, bob is apart.
    api.call("PUT", "/v1/media/settings", token=admin, body={"uploads_per_minute": 2})
    codes = [upload(api, users["alice"], jpeg).status_code for _ in range(3)]
    assert codes[-1] == 429, codes
    r = upload(api, users["alice"], jpeg)
    problem(r, 429, "rate-limited")
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Limit"] == "2"
    assert upload(api, users["bob"], jpeg).status_code == 201


def test_delete_by_uploader_or_admin(api, tenant, users, image):
    since = int(time.time() * 1000)
    mid = image["id"]
    keys = [v["key"] for v in media_db().media.find_one({"_id": mid})["variants"].values()]
    problem(api.call("DELETE", f"/v1/media/{mid}", token=users["bob"]), 404)
    r = api.call("DELETE", f"/v1/media/{mid}", token=users["alice"])
    assert r.status_code == 204, r.text
    for path in (f"/v1/media/{mid}", f"/v1/media/{mid}/content"):
        problem(api.call("GET", path, token=users["alice"]), 404)
    problem(api.call("DELETE", f"/v1/media/{mid}", token=users["alice"]), 404)
    assert media_db()["media.files"].count_documents({"_id": {"$in": keys}}) == 0
    evs = read_events("media", lambda e: any(x["subject"] == mid and x["type"] == "media.deleted" for x in e), since)
    assert any(x["subject"] == mid and x["type"] == "media.deleted" for x in evs)
    # A tenant admin may delete someone else's media.
    r = upload(api, users["bob"], b"%PDF-1.4\nbob's")
    assert api.call("DELETE", f"/v1/media/{r.json()['id']}", token=admin_token(tenant["id"])).status_code == 204


def test_attachable_check_for_the_messaging_service(api, tenant, users, image):
    mid = image["id"]
    ok = requests.get(f"{MEDIA}/internal/v1/media/{mid}/attachable", headers=INTERNAL_HEADERS,
                      params={"tenant": tenant["id"], "user": "alice"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["id"] == mid
    r = requests.get(f"{MEDIA}/internal/v1/media/{mid}/attachable", headers=INTERNAL_HEADERS,
                     params={"tenant": tenant["id"], "user": "bob"}, timeout=10)
    problem(r, 409, "media-not-attachable", "another user")
    r = requests.get(f"{MEDIA}/internal/v1/media/{mid}/attachable", headers=INTERNAL_HEADERS,
                     params={"tenant": new_tenant(api)["id"], "user": "alice"}, timeout=10)
    problem(r, 404)
    r = requests.get(f"{MEDIA}/internal/v1/media/{mid}/attachable", headers=INTERNAL_HEADERS,
                     params={"tenant": tenant["id"]}, timeout=10)
    problem(r, 400)
    # Not routed by the gateway.
    assert api.call("GET", f"/internal/v1/media/{mid}/attachable").status_code == 404


def produce(topic, key, event):
    p = Producer({"bootstrap.servers": KAFKA})
    p.produce(topic, key=key, value=json.dumps(event))
    assert p.flush(10) == 0


def test_user_deleted_removes_that_users_media(api, tenant, users, image):
    bobs = upload(api, users["bob"], b"%PDF-1.4\nbob").json()["id"]
    # The real event: the tenant's backend erases alice through the user service.
    r = server(api, tenant, "DELETE", "/v1/server/users/alice")
    assert r.status_code == 204, r.text
    deadline = time.time() + 30
    while time.time() < deadline and media_db().media.count_documents(
            {"_id": image["id"], "status": {"$ne": "deleted"}}):
        time.sleep(0.2)
    problem(api.call("GET", f"/v1/media/{image['id']}", token=admin_token(tenant["id"])), 404)
    assert api.call("GET", f"/v1/media/{bobs}", token=users["bob"]).status_code == 200


def test_message_media_expire_when_the_tenant_asks(api, tenant, users, image):
    admin = admin_token(tenant["id"])
    avatar = upload(api, users["alice"], b"%PDF-1.4\navatar", purpose="avatar").json()["id"]
    fresh = upload(api, users["alice"], b"%PDF-1.4\nfresh").json()["id"]
    old = datetime.now(timezone.utc) - timedelta(days=91)
    media_db().media.update_many({"_id": {"$in": [image["id"], avatar]}}, {"$set": {"created_at": old}})
    run = lambda: requests.post(f"{MEDIA}/internal/v1/jobs/run", headers=INTERNAL_HEADERS, timeout=30)
    assert run().status_code == 200
    # The tenant has not asked yet: nothing goes.
    assert api.call("GET", f"/v1/media/{image['id']}", token=admin).status_code == 200
    api.call("PUT", "/v1/media/settings", token=admin, body={"message_expiry_days": 90})
    r = run()
    assert r.status_code == 200 and r.json()["deleted"] >= 1
    problem(api.call("GET", f"/v1/media/{image['id']}", token=admin), 404)
    assert api.call("GET", f"/v1/media/{avatar}", token=admin).status_code == 200  # not message media
    assert api.call("GET", f"/v1/media/{fresh}", token=admin).status_code == 200   # too young
    assert run().json()["deleted"] == 0  # idempotent: a second pass finds nothing more
    problem(api.call("GET", f"/v1/media/{image['id']}", token=admin), 404)


def test_media_events_match_their_schemas(api, users, image):
    """Every media event on the topic validates against proto/events/<type>.schema.json."""
    import jsonschema
    from conftest import ROOT
    since = int(time.time() * 1000) - 120_000
    api.call("DELETE", f"/v1/media/{image['id']}", token=users["alice"])
    evs = read_events("media", lambda e: any(x["subject"] == image["id"] and x["type"] == "media.deleted" for x in e), since)
    mine = [e for e in evs if e["subject"] == image["id"]]
    assert {e["type"] for e in mine} >= {"media.uploaded", "media.processed", "media.deleted"}
    for e in mine:
        e.pop("_key")
        schema = json.loads((ROOT / "proto" / "events" / f"{e['type']}.schema.json").read_text())
        jsonschema.validate(e, schema)


def test_processing_is_redone_after_a_crash_without_leaks(api, tenant, users, image):
    """A worker that died after staging and writing its variants but before flipping the
    status left: status pending, staging keys whose blobs exist. The redelivered
    media.uploaded redoes the job: the staged blobs are removed, new variants are written and
    published with the status in one update."""
    db = media_db()
    doc = db.media.find_one({"_id": image["id"]})
    stale = [v["key"] for v in doc["variants"].values()]
    assert db["media.files"].count_documents({"_id": {"$in": stale}}) == 4
    db.media.update_one({"_id": image["id"]}, {"$set": {"status": "pending", "staging": stale},
                                                "$unset": {"variants": "", "processed_at": ""}})
    # While pending, no variant is served.
    problem(api.call("GET", f"/v1/media/{image['id']}/content", token=users["alice"]), 409, "media-processing")
    produce("media", image["id"], {"specversion": "1.0", "id": str(uuid.uuid4()), "type": "media.uploaded",
                                   "source": "/media", "time": "2026-01-01T00:00:00.000Z",
                                   "subject": image["id"], "datacontenttype": "application/json",
                                   "tenant": tenant["id"], "data": {"id": image["id"]}})
    m = wait_status(api, users["alice"], image["id"])
    assert m["status"] == "processed"
    doc = db.media.find_one({"_id": image["id"]})
    fresh = [v["key"] for v in doc["variants"].values()]
    assert not set(fresh) & set(stale) and "staging" not in doc
    assert db["media.files"].count_documents({"_id": {"$in": stale}}) == 0  # nothing leaked
    assert db["media.files"].count_documents({"_id": {"$in": fresh}}) == 4
    assert api.call("GET", f"/v1/media/{image['id']}/content?variant=thumb_128", token=users["alice"]).status_code == 200


# --- members of a conversation read the media its messages reference ------------------------

def readable(api, token, mid):
    """What the caller gets from the three authenticated reads of a media object: its metadata,
    its bytes and a signed URL (all 200, or all the same 404)."""
    codes = {api.call("GET", f"/v1/media/{mid}{p}", token=token).status_code
             for p in ("", "/content?variant=thumb_128", "/url?variant=thumb_128")}
    assert len(codes) == 1, codes
    return codes.pop()


def image_message(api, token, cid, mid):
    r = api.call("POST", f"/v1/conversations/{cid}/messages", token,
                 {"type": "image", "attachments": [mid]})
    assert r.status_code == 201, r.text
    return r.json()


def test_members_read_the_media_of_their_conversations(api, tenant, tmp_path):
    t = {u: token_for(api, tenant, u) for u in ("alice", "bob", "carol", "dave")}
    conv = api.call("POST", "/v1/conversations", t["alice"],
                    {"type": "group", "members": ["bob", "carol"]})
    assert conv.status_code == 201, conv.text
    cid = conv.json()["id"]
    first = upload(api, t["alice"], make_image(tmp_path / "a", 300, 200))
    assert first.status_code == 201, first.text
    first = wait_status(api, t["alice"], first.json()["id"], timeout=600)["id"]

    # Not referenced by any message yet: only the uploader.
    assert readable(api, t["alice"], first) == 200
    assert readable(api, t["bob"], first) == 404
    image_message(api, t["alice"], cid, first)
    # Members read it: metadata, bytes and a signed URL that works without a token.
    for who in ("bob", "carol"):
        assert readable(api, t[who], first) == 200
    got = api.call("GET", f"/v1/media/{first}", token=t["bob"]).json()
    assert got["id"] == first and got["uploader"] == "alice"
    url = api.call("GET", f"/v1/media/{first}/url?variant=original", token=t["bob"]).json()["url"]
    assert requests.get(api.base + url, timeout=10).content == \
        api.call("GET", f"/v1/media/{first}/content", token=t["alice"]).content
    # Reading is not managing: a member cannot delete it.
    problem(api.call("DELETE", f"/v1/media/{first}", token=t["bob"]), 404)
    # A non-member of the same tenant, and a user of the same name in another tenant: 404.
    problem(api.call("GET", f"/v1/media/{first}", token=t["dave"]), 404, detail="no such media")
    assert readable(api, t["dave"], first) == 404
    other = token_for(api, new_tenant(api), "bob")
    assert readable(api, other, first) == 404

    # Carol leaves: what was sent before she left stays readable (the rule search and sync
    # follow); what is sent after is not.
    r = api.call("POST", f"/v1/conversations/{cid}/leave", t["carol"])
    assert r.status_code in (200, 204), r.text
    second = upload(api, t["bob"], make_image(tmp_path / "b", 120, 90))
    assert second.status_code == 201, second.text
    second = wait_status(api, t["bob"], second.json()["id"], timeout=600)["id"]
    msg = image_message(api, t["bob"], cid, second)
    assert readable(api, t["carol"], first) == 200
    assert readable(api, t["carol"], second) == 404
    assert readable(api, t["alice"], second) == 200
    # Added again, she sees the whole history again.
    r = api.call("POST", f"/v1/conversations/{cid}/members", t["alice"], {"user_ids": ["carol"]})
    assert r.status_code == 200, r.text
    assert readable(api, t["carol"], second) == 200
    # A message deleted for everyone no longer lends its media to anyone but the uploader.
    r = api.call("DELETE", f"/v1/conversations/{cid}/messages/{msg['id']}", t["bob"])
    assert r.status_code == 204, r.text
    assert readable(api, t["alice"], second) == 404
    assert readable(api, t["bob"], second) == 200


def test_forwarded_media_is_read_in_the_conversation_it_was_forwarded_to(api, tenant, tmp_path):
    t = {u: token_for(api, tenant, u) for u in ("fa", "fb", "fc")}
    first = api.call("POST", "/v1/conversations", t["fa"], {"type": "direct", "members": ["fb"]}).json()["id"]
    second = api.call("POST", "/v1/conversations", t["fb"], {"type": "direct", "members": ["fc"]}).json()["id"]
    r = upload(api, t["fa"], b"%PDF-1.4\nforwarded\n")
    assert r.status_code == 201, r.text
    mid = wait_status(api, t["fa"], r.json()["id"], timeout=600)["id"]
    r = api.call("POST", f"/v1/conversations/{first}/messages", t["fa"], {"type": "file", "attachments": [mid]})
    assert r.status_code == 201, r.text
    assert readable_file(api, t["fc"], mid) == 404
    # fb, who did not upload it, forwards it to a conversation of their own with fc.
    r = api.call("POST", f"/v1/conversations/{first}/forward", t["fb"],
                 {"message_ids": [r.json()["id"]], "to": [second]})
    assert r.status_code in (200, 201), r.text
    assert readable_file(api, t["fc"], mid) == 200
    assert readable_file(api, t["fb"], mid) == 200


def readable_file(api, token, mid):
    codes = {api.call("GET", f"/v1/media/{mid}{p}", token=token).status_code for p in ("", "/content")}
    assert len(codes) == 1, codes
    return codes.pop()


def test_the_member_check_is_internal_and_fails_closed(api, tenant, users, image):
    base = f"http://127.0.0.1:{PORTS['messaging']}/internal/v1/messaging/attachments/{image['id']}"
    r = requests.get(base, params={"tenant": tenant["id"], "user": "bob"}, headers=INTERNAL_HEADERS,
                     timeout=10)
    problem(r, 404, detail="no message")
    problem(requests.get(base, params={"tenant": tenant["id"]}, headers=INTERNAL_HEADERS, timeout=10), 400)
    # Not routed by the gateway.
    assert api.call("GET", f"/internal/v1/messaging/attachments/{image['id']}").status_code == 404
