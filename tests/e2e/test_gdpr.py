"""GDPR export through the gateway: an asynchronous job gathers everything about the user,
the conversations and messages from the messaging service included, into one JSON document,
with status and download endpoints that only the user reaches."""

import json
import time

import pymongo

from conftest import DBS, MONGO_URI, new_tenant, token_for
from users_lib import problem, register, server


def wait_done(api, token, location, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.call("GET", location, token).json()
        if st["status"] in ("done", "failed"):
            return st
        time.sleep(0.2)
    raise AssertionError(f"export not finished: {st}")


def test_export_gathers_everything_about_the_user(api, tenant):
    server(api, tenant, "PUT", "/v1/server/users/alice", {"name": "Alice", "metadata": {"plan": "pro"}})
    alice, bob = token_for(api, tenant, "alice"), token_for(api, tenant, "bob")
    token_for(api, tenant, "carol")
    d = api.call("POST", "/v1/conversations", alice, {"type": "direct", "members": ["bob"]}).json()["id"]
    g = api.call("POST", "/v1/conversations", bob, {"type": "group", "members": ["alice"], "title": "team"}).json()["id"]
    for cid, tok, text in [(d, alice, "a1"), (d, bob, "b1"), (g, alice, "a2"), (g, alice, "a3")]:
        assert api.call("POST", f"/v1/conversations/{cid}/messages", tok, {"text": text}).status_code == 201
    assert api.call("PUT", "/v1/users/me/blocks/carol", alice).status_code == 204

    r = api.call("POST", "/v1/users/me/exports", alice)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "pending" and r.headers["Location"] == f"/v1/users/me/exports/{job['id']}"
    st = wait_done(api, alice, r.headers["Location"])
    assert st["status"] == "done", st
    assert st["download_url"] == f"/v1/users/me/exports/{job['id']}/download" and st["size"] > 0

    r = api.call("GET", st["download_url"], alice)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.headers["Content-Disposition"] == f'attachment; filename="export-{job["id"]}.json"'
    doc = r.json()
    assert doc["format"] == "chat-platform-export/1" and doc["truncated"] is False
    assert doc["user"]["id"] == "alice" and doc["user"]["metadata"] == {"plan": "pro"}
    assert doc["credentials"] == {"password": False}
    assert len(doc["sessions"]) >= 1 and all("ip" in s for s in doc["sessions"])
    assert doc["blocks"] == ["carol"]
    assert sorted(c["id"] for c in doc["conversations"]) == sorted([d, g])
    assert sorted(m["text"] for m in doc["messages"]) == ["a1", "a2", "a3"]  # hers only
    assert st["size"] == len(r.content)


def test_password_account_export_never_holds_secrets(api):
    t = new_tenant(api, self_registration=True)
    s = register(api, t, email="pat@example.com")
    loc = api.call("POST", "/v1/users/me/exports", s["access_token"]).headers["Location"]
    st = wait_done(api, s["access_token"], loc)
    text = api.call("GET", st["download_url"], s["access_token"]).text
    doc = json.loads(text)
    assert doc["credentials"]["password"] is True and "password_set_at" in doc["credentials"]
    assert doc["user"]["username"] == s["user"]["username"] and doc["user"]["email"] == "pat@example.com"
    for secret in ("argon2", s["refresh_token"], "password_hash", "ev_"):
        assert secret not in text


def test_exports_are_the_owners_only_and_one_at_a_time(api, tenant):
    ann = token_for(api, tenant, "ann")
    loc = api.call("POST", "/v1/users/me/exports", ann).headers["Location"]
    wait_done(api, ann, loc)
    for stranger in (token_for(api, tenant, "ben"), token_for(api, new_tenant(api), "ann")):
        problem(api.call("GET", loc, stranger), 404)
        problem(api.call("GET", loc + "/download", stranger), 404)
    problem(api.call("GET", "/v1/users/me/exports/not-a-uuid", ann), 404)
    problem(api.call("GET", loc), 401)
    # A job under way (made to look stuck in "running"): no second one, nothing to download.
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    jid = loc.rsplit("/", 1)[1]
    db.exports.update_one({"_id": jid}, {"$set": {"status": "running"}, "$unset": {"document": ""}})
    problem(api.call("POST", "/v1/users/me/exports", ann), 409, "under way")
    problem(api.call("GET", loc + "/download", ann), 409, "not ready")


def test_expired_records_are_swept(api, tenant):
    """No TTL indexes on FerretDB: the user service's janitor removes what has expired."""
    import datetime
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=40)
    fresh = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    marker = "sweep-" + str(time.time_ns())
    db.refresh_tokens.insert_many([{"_id": marker + "-old", "expires_at": old}, {"_id": marker + "-new", "expires_at": fresh}])
    db.onetime_tokens.insert_one({"_id": marker + "-ot", "expires_at": old})
    db.spent_tokens.insert_one({"_id": marker + "-sp", "used_at": old})
    db.sessions.insert_many([{"_id": marker + "-s1", "status": "revoked", "revoked_at": old},
                             {"_id": marker + "-s2", "status": "active", "created_at": old}])
    db.exports.insert_one({"_id": marker + "-ex", "status": "done", "finished_at": old})
    deadline = time.time() + 15
    ids = lambda coll: {d["_id"] for d in db[coll].find({"_id": {"$regex": "^" + marker}})}
    while time.time() < deadline and (ids("refresh_tokens") != {marker + "-new"} or ids("exports")):
        time.sleep(0.3)
    assert ids("refresh_tokens") == {marker + "-new"}
    assert ids("onetime_tokens") == set() and ids("spent_tokens") == set()
    assert ids("sessions") == {marker + "-s2"}  # an active session stays, however old
    assert ids("exports") == set()
