"""Tenants and their API keys, as the platform operator sees them through the gateway:
create with defaults and validated settings, list, get, update, suspend (tokens out already are
refused at once) and resume; several API keys per tenant, secrets shown once and stored hashed,
rotation with an overlap, revocation."""

import hashlib
import secrets
import time

import pymongo
import pytest
import requests

from conftest import ADMIN_KEY, DBS, MONGO_URI, PORTS, new_tenant, token_for

ADMIN = {"X-Admin-Key": ADMIN_KEY}
DEFAULTS = {"self_registration": False, "send_rate_per_min": 60, "api_rate_per_min": 1200,
            "message_max_chars": 5000, "group_member_max": 1000, "edit_window_s": 900,
            "retention_days": 0, "ws_allowed_origins": [], "erase_policy": "anonymize"}


def db():
    return pymongo.MongoClient(MONGO_URI)[DBS["user"]]


def problem(r, status, detail=None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    if detail:
        assert detail in r.json()["detail"], r.json()["detail"]


def create(api, body):
    return api.call("POST", "/v1/tenants", body=body, headers=ADMIN)


def test_create_applies_defaults_and_shows_the_secret_once(api):
    r = create(api, {"name": "acme"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Location"] == t["id"]
    assert t["status"] == "active" and t["name"] == "acme"
    settings = dict(t["settings"])
    assert settings.pop("webhook_secret").startswith("whsec_")
    assert settings == DEFAULTS
    assert t["api_key"].startswith("ck_") and t["api_secret"].startswith("cs_")
    # Stored hashed; never shown again.
    key = db().api_keys.find_one({"_id": t["api_key"]})
    assert key["secret_sha256"] == hashlib.sha256(t["api_secret"].encode()).hexdigest()
    assert t["api_secret"] not in str(db().tenants.find_one({"_id": t["id"]}))
    got = api.call("GET", f"/v1/tenants/{t['id']}", headers=ADMIN).json()
    assert "api_secret" not in got and got["settings"] == t["settings"]
    keys = api.call("GET", f"/v1/tenants/{t['id']}/api-keys", headers=ADMIN).json()["items"]
    assert [k["id"] for k in keys] == [t["api_key"]] and "api_secret" not in keys[0]


def test_settings_are_validated_and_nothing_is_stored_on_error(api):
    before = db().tenants.count_documents({})
    for body, detail in [
        ({"name": "x", "settings": {"message_max_chars": 0}}, "message_max_chars"),
        ({"name": "x", "settings": {"ws_allowed_origins": ["not an origin"]}}, "origin"),
        ({"name": "x", "settings": {"webhook_secret": "short"}}, "webhook_secret"),
        ({"name": "x", "settings": {"self_registration": {"$ne": None}}}, "must be a boolean"),
        ({"name": "x", "settings": {"owner": "me"}}, "unknown field 'owner'"),
        ({"name": "x", "status": "active"}, "unknown field 'status'"),
        ({"name": "x", "api_key": "ck_mine"}, "unknown field 'api_key'"),
        ({"name": {"$gt": ""}}, "must be a string"),
        ({"name": ""}, "at least 1"),
    ]:
        problem(create(api, body), 400, detail)
    assert db().tenants.count_documents({}) == before


def test_list_get_update(api):
    a, b = new_tenant(api), new_tenant(api)
    r = api.call("PATCH", f"/v1/tenants/{a['id']}", body={
        "name": "renamed", "settings": {"self_registration": True, "edit_window_s": 0,
                                        "ws_allowed_origins": ["https://chat.example.com"]}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["name"] == "renamed" and t["settings"]["self_registration"] is True
    assert t["settings"]["edit_window_s"] == 0 and t["settings"]["send_rate_per_min"] == 60
    assert t["settings"]["ws_allowed_origins"] == ["https://chat.example.com"]
    assert api.call("GET", f"/v1/tenants/{a['id']}", headers=ADMIN).json() == t
    # Mass assignment: status, id and keys are not settable here.
    for body in ({"status": "active"}, {"id": b["id"]}, {"settings": {"status": "x"}}):
        problem(api.call("PATCH", f"/v1/tenants/{a['id']}", body=body, headers=ADMIN), 400, "unknown field")
    # Listing pages through every tenant, oldest first.
    seen, cursor = [], None
    while True:
        r = api.call("GET", "/v1/tenants?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=ADMIN)
        assert r.status_code == 200, r.text
        seen += [x["id"] for x in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and a["id"] in seen and b["id"] in seen
    problem(api.call("GET", "/v1/tenants/0190a000-0000-7000-8000-000000000000", headers=ADMIN), 404)
    problem(api.call("GET", "/v1/tenants/nope", headers=ADMIN), 404)


def test_every_operator_endpoint_needs_the_admin_key(api, tenant):
    tid = tenant["id"]
    calls = [("GET", "/v1/tenants"), ("GET", f"/v1/tenants/{tid}"), ("PATCH", f"/v1/tenants/{tid}"),
             ("POST", f"/v1/tenants/{tid}/suspend"), ("POST", f"/v1/tenants/{tid}/resume"),
             ("POST", f"/v1/tenants/{tid}/api-keys"), ("GET", f"/v1/tenants/{tid}/api-keys"),
             ("POST", f"/v1/tenants/{tid}/api-keys/{tenant['api_key']}/rotate"),
             ("DELETE", f"/v1/tenants/{tid}/api-keys/{tenant['api_key']}")]
    user_token = token_for(api, tenant, "alice")
    for method, path in calls:
        for headers in ({}, {"X-Admin-Key": "wrong"}, {"Authorization": f"Bearer {user_token}"}):
            problem(api.call(method, path, body={}, headers=headers), 401)
    assert db().tenants.find_one({"_id": tid})["status"] == "active"


def test_suspend_refuses_new_tokens_and_tokens_already_out(api, tenant):
    alice = token_for(api, tenant, "alice")
    assert api.call("GET", "/v1/conversations", alice).status_code == 200
    r = api.call("POST", f"/v1/tenants/{tenant['id']}/suspend", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    problem(api.call("GET", "/v1/users/me", alice), 401, "the tenant is suspended")
    problem(requests.get(f"http://127.0.0.1:{PORTS['messaging']}/v1/conversations",
                         headers={"Authorization": f"Bearer {alice}"}), 401, "the tenant is suspended")
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "alice"},
                     auth=(tenant["api_key"], tenant["api_secret"])), 403, "suspended")
    r = api.call("POST", f"/v1/tenants/{tenant['id']}/resume", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert api.call("GET", "/v1/users/me", alice).status_code == 200


def test_several_keys_rotation_with_overlap_and_revocation(api, tenant):
    tid, k1 = tenant["id"], (tenant["api_key"], tenant["api_secret"])
    r = api.call("POST", f"/v1/tenants/{tid}/api-keys", body={"name": "ci"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    k2 = (r.json()["api_key"], r.json()["api_secret"])
    assert r.json()["name"] == "ci" and r.headers["Cache-Control"] == "no-store"
    for k in (k1, k2):
        assert token_for(api, tenant | {"api_key": k[0], "api_secret": k[1]}, "u1")

    # Rotate k1 with an overlap: both the old and the new key work until the overlap ends.
    r = api.call("POST", f"/v1/tenants/{tid}/api-keys/{k1[0]}/rotate", body={"overlap_s": 2}, headers=ADMIN)
    assert r.status_code == 201, r.text
    k3 = (r.json()["api_key"], r.json()["api_secret"])
    assert r.json()["replaces"]["id"] == k1[0] and r.json()["name"] == "default"
    for k in (k1, k3):
        assert api.call("POST", "/v1/auth/token", body={"user_id": "u1"}, auth=k).status_code == 200
    time.sleep(2.5)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "u1"}, auth=k1), 401, "invalid API key or secret")
    assert api.call("POST", "/v1/auth/token", body={"user_id": "u1"}, auth=k3).status_code == 200

    # Revoke k2: refused at once, with the same answer as a wrong secret.
    assert api.call("DELETE", f"/v1/tenants/{tid}/api-keys/{k2[0]}", headers=ADMIN).status_code == 204
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "u1"}, auth=k2), 401, "invalid API key or secret")
    problem(api.call("DELETE", f"/v1/tenants/{tid}/api-keys/{k2[0]}", headers=ADMIN), 404)
    keys = {k["id"]: k for k in api.call("GET", f"/v1/tenants/{tid}/api-keys", headers=ADMIN).json()["items"]}
    assert keys[k1[0]]["status"] == "expired" and keys[k2[0]]["status"] == "revoked"
    assert keys[k3[0]]["status"] == "active" and keys[k3[0]]["last_used_at"] is not None


def test_keys_are_scoped_to_their_tenant(api, tenant):
    other = new_tenant(api)
    # Another tenant's key through this tenant's path is not found, and is not touched.
    problem(api.call("DELETE", f"/v1/tenants/{tenant['id']}/api-keys/{other['api_key']}", headers=ADMIN), 404)
    problem(api.call("POST", f"/v1/tenants/{tenant['id']}/api-keys/{other['api_key']}/rotate", body={},
                     headers=ADMIN), 404)
    assert token_for(api, other, "x")
    # A token minted with tenant B's key is a tenant B token.
    r = api.call("POST", "/v1/auth/token", body={"user_id": "x"}, auth=(other["api_key"], other["api_secret"]))
    assert r.json()["user"]["tenant_id"] == other["id"]
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "x"},
                     auth=(tenant["api_key"], other["api_secret"])), 401)


def test_active_keys_are_capped(api):
    t = new_tenant(api)
    for _ in range(19):
        assert api.call("POST", f"/v1/tenants/{t['id']}/api-keys", body={}, headers=ADMIN).status_code == 201
    problem(api.call("POST", f"/v1/tenants/{t['id']}/api-keys", body={}, headers=ADMIN), 409, "20")
    problem(api.call("POST", f"/v1/tenants/{t['id']}/api-keys/{t['api_key']}/rotate", body={},
                     headers=ADMIN), 409, "20")


def test_bad_key_bodies(api, tenant):
    path = f"/v1/tenants/{tenant['id']}/api-keys"
    problem(api.call("POST", path, body={"name": {"$ne": None}}, headers=ADMIN), 400, "must be a string")
    problem(api.call("POST", path, body={"secret": "mine"}, headers=ADMIN), 400, "unknown field 'secret'")
    problem(api.call("POST", f"{path}/{tenant['api_key']}/rotate", body={"overlap_s": -1}, headers=ADMIN), 400)
    problem(api.call("POST", f"{path}/{tenant['api_key']}/rotate", body={"overlap_s": 10**9}, headers=ADMIN), 400)
    problem(api.call("POST", f"{path}/{tenant['api_key']}/rotate", body={"overlap_s": "1"}, headers=ADMIN), 400)


def test_the_messaging_service_enforces_the_tenants_own_limits(api):
    """send_rate_per_min, message_max_chars, group_member_max and edit_window_s are the tenant's
    (PATCH /v1/tenants/{id}), not the process defaults; a change applies within the cache TTL
    (TENANT_SETTINGS_TTL_MS, 500 ms here)."""
    from chat import create as create_conv, send

    r = create(api, {"name": "strict", "settings": {
        "message_max_chars": 10, "edit_window_s": 0, "send_rate_per_min": 3, "group_member_max": 3}})
    assert r.status_code == 201, r.text
    t = r.json()
    alice = token_for(api, t, "alice")
    problem(api.call("POST", "/v1/conversations", alice,
                     {"type": "group", "members": ["bob", "carol", "dave"]}),
            400, "at most 3")
    cid = create_conv(api, alice, "group", ["bob", "carol"])["id"]
    problem(send(api, alice, cid, "x" * 11), 400, "11 characters, more than the 10 allowed")
    r = send(api, alice, cid, "short")
    assert r.status_code == 201, r.text
    problem(api.call("PATCH", f"/v1/conversations/{cid}/messages/{r.json()['id']}", alice,
                     {"text": "edited"}), 403, "edited for 0 seconds")
    assert send(api, alice, cid, "two").status_code == 201
    # The third attempt of the minute still passes (the 400 above did not count); the fourth not.
    assert send(api, alice, cid, "three").status_code == 201
    r = send(api, alice, cid, "four")
    problem(r, 429, "at most 3 messages per minute")
    assert r.headers["RateLimit-Limit"] == "3"

    # Raised by the operator: applies within the TTL, for every member of the tenant.
    r = api.call("PATCH", f"/v1/tenants/{t['id']}", body={"settings": {"message_max_chars": 20}},
                 headers=ADMIN)
    assert r.status_code == 200, r.text
    bob = token_for(api, t, "bob")
    deadline = time.time() + 5
    while True:
        r = send(api, bob, cid, "y" * 15)
        if r.status_code == 201 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 201, r.text

    # Another tenant keeps the defaults.
    other = new_tenant(api)
    eve = token_for(api, other, "eve")
    cid2 = create_conv(api, eve, "group", ["f1", "f2", "f3"])["id"]
    assert send(api, eve, cid2, "z" * 500).status_code == 201
