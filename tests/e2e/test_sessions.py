"""Sessions and refresh tokens through the gateway: rotation on every use, theft detection
(a replayed refresh token revokes the whole session), the session list, revoking one or all
others, logout; a revoked session's access tokens are refused at once by the gateway and the
services (Redis denylist), and session.revoked is read back from Kafka with a real consumer."""

import json
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pymongo
import pytest
import requests

from conftest import DBS, MONGO_URI, PORTS, ROOT, new_tenant, read_events, token_for

PASSWORD = "correct horse battery staple"


def schema(event_type):
    return json.loads((ROOT / f"proto/events/{event_type}.schema.json").read_text())


@pytest.fixture
def open_tenant(api):
    return new_tenant(api, self_registration=True)


def register(api, tenant, username=None, device=None):
    body = {"tenant_id": tenant["id"], "username": username or "u" + secrets.token_hex(4),
            "password": PASSWORD}
    if device:
        body["device_name"] = device
    r = api.call("POST", "/v1/auth/register", body=body, headers={"User-Agent": "pytest/1.0"})
    assert r.status_code == 201, r.text
    return r.json()


def login(api, tenant, username, device=None):
    body = {"tenant_id": tenant["id"], "username": username, "password": PASSWORD}
    if device:
        body["device_name"] = device
    r = api.call("POST", "/v1/auth/login", body=body)
    assert r.status_code == 200, r.text
    return r.json()


def refresh(api, token):
    return api.call("POST", "/v1/auth/refresh", body={"refresh_token": token})


def me(api, access):
    return api.call("GET", "/v1/users/me", access)


def messaging_direct(access):
    return requests.get(f"http://127.0.0.1:{PORTS['messaging']}/v1/conversations",
                        headers={"Authorization": f"Bearer {access}"}, timeout=10)


def assert_revoked(api, access):
    for r in (me(api, access), messaging_direct(access),
              api.call("GET", "/v1/conversations", access)):
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "the session was revoked"


def test_login_gives_a_pair_and_refresh_rotates_it(api, open_tenant):
    s = register(api, open_tenant, device="Pixel 8")
    assert s["refresh_token"].startswith("rt_") and len(s["refresh_token"]) == 67
    assert s["token_type"] == "Bearer" and s["expires_in"] == 900
    assert s["refresh_expires_in"] == 30 * 24 * 3600
    r = refresh(api, s["refresh_token"])
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    n = r.json()
    assert n["session_id"] == s["session_id"], "a refresh keeps the session"
    assert n["refresh_token"] != s["refresh_token"] and n["access_token"] != s["access_token"]
    assert n["user"]["id"] == s["user"]["id"]
    assert me(api, n["access_token"]).status_code == 200
    assert me(api, s["access_token"]).status_code == 200  # rotation alone revokes nothing
    # The store holds hashes only, never the token itself.
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    assert db.refresh_tokens.find_one({"_id": n["refresh_token"]}) is None
    assert db.refresh_tokens.count_documents({"sid": s["session_id"]}) == 2


def test_replayed_refresh_token_revokes_the_whole_session(api, open_tenant):
    t0 = int(time.time() * 1000) - 1000
    s = register(api, open_tenant)
    stolen = s["refresh_token"]
    thief = refresh(api, stolen).json()          # the thief uses it first...
    r = refresh(api, stolen)                     # ...the victim's later use is a reuse
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "the refresh token was already used; the session is revoked"
    # Every token of the session is dead: both access tokens and the thief's new refresh token.
    assert_revoked(api, s["access_token"])
    assert_revoked(api, thief["access_token"])
    r = refresh(api, thief["refresh_token"])
    assert r.status_code == 401 and r.json()["detail"] == "the session was revoked"
    events = read_events("users", lambda evs: any(e["type"] == "session.revoked" and
                                                  e["data"]["session_id"] == s["session_id"] for e in evs), t0)
    ev = next(e for e in events if e["type"] == "session.revoked" and e["data"]["session_id"] == s["session_id"])
    assert ev["data"]["reason"] == "refresh_token_reuse" and ev["_key"] == s["user"]["id"]
    assert ev["tenant"] == open_tenant["id"] and ev["data"]["user_id"] == s["user"]["id"]
    jsonschema.Draft202012Validator(schema("session.revoked")).validate({k: v for k, v in ev.items() if k != "_key"})


def test_concurrent_uses_of_one_refresh_token_yield_one_pair(api, open_tenant):
    s = register(api, open_tenant)
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: refresh(api, s["refresh_token"]), range(8)))
    assert codes == [200] + [401] * 7, codes


def test_denylist_entry_lives_as_long_as_the_access_tokens(api, open_tenant):
    s = register(api, open_tenant)
    assert api.call("POST", "/v1/auth/logout", s["access_token"]).status_code == 204
    ttl = int(subprocess.run(["redis-cli", "-p", "6379", "PTTL", f"revoked:sid:{s['session_id']}"],
                             capture_output=True, text=True, check=True).stdout)
    assert (900 + 30) * 1000 - 60_000 < ttl <= (900 + 30) * 1000  # token lifetime + leeway


def test_session_list_revoke_one_and_revoke_others(api, open_tenant):
    s1 = register(api, open_tenant, device="laptop")
    name = s1["user"]["username"]
    s2 = login(api, open_tenant, name, device="phone")
    s3 = login(api, open_tenant, name, device="tablet")
    r = api.call("GET", "/v1/sessions", s2["access_token"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["device_name"] for i in items] == ["tablet", "phone", "laptop"]  # newest first
    assert [i["current"] for i in items] == [False, True, False]
    assert items[2]["user_agent"] == "pytest/1.0" and items[2]["ip"] == "127.0.0.1"
    assert {"id", "kind", "created_at", "last_active_at"} <= items[0].keys()
    # Pages of one follow the cursor.
    page = api.call("GET", "/v1/sessions?limit=1", s2["access_token"]).json()
    assert len(page["items"]) == 1 and page["next_cursor"] == items[0]["id"]
    page = api.call("GET", f"/v1/sessions?limit=1&cursor={page['next_cursor']}", s2["access_token"]).json()
    assert page["items"][0]["id"] == items[1]["id"]

    # Revoke one (the laptop) from the phone.
    assert api.call("DELETE", f"/v1/sessions/{s1['session_id']}", s2["access_token"]).status_code == 204
    assert_revoked(api, s1["access_token"])
    assert refresh(api, s1["refresh_token"]).status_code == 401
    assert api.call("DELETE", f"/v1/sessions/{s1['session_id']}", s2["access_token"]).status_code == 404
    # Everything else but the phone.
    r = api.call("POST", "/v1/sessions/revoke-others", s2["access_token"])
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    assert_revoked(api, s3["access_token"])
    assert me(api, s2["access_token"]).status_code == 200
    assert [i["id"] for i in api.call("GET", "/v1/sessions", s2["access_token"]).json()["items"]] == [s2["session_id"]]


def test_another_users_or_tenants_session_is_not_found(api, open_tenant):
    a = register(api, open_tenant)
    b = register(api, open_tenant)
    other = register(api, new_tenant(api, self_registration=True))
    for victim in (b, other):
        r = api.call("DELETE", f"/v1/sessions/{victim['session_id']}", a["access_token"])
        assert r.status_code == 404, r.text
        assert me(api, victim["access_token"]).status_code == 200  # untouched
    for bad in ("not-a-uuid", "0190a000-0000-7000-8000-000000000000"):
        assert api.call("DELETE", f"/v1/sessions/{bad}", a["access_token"]).status_code == 404
    assert api.call("GET", "/v1/sessions?cursor=zzz", a["access_token"]).status_code == 400


def test_logout_ends_the_session(api, tenant):
    # Server-side sessions (tenant key) get a refresh token too.
    r = api.call("POST", "/v1/auth/token", body={"user_id": "loggy", "device_name": "kiosk"},
                 auth=(tenant["api_key"], tenant["api_secret"]))
    assert r.status_code in (200, 201), r.text
    s = r.json()
    assert api.call("POST", "/v1/auth/logout", s["access_token"]).status_code == 204
    assert_revoked(api, s["access_token"])
    assert refresh(api, s["refresh_token"]).status_code == 401
    assert api.call("POST", "/v1/auth/logout", s["access_token"]).status_code == 401


def test_refresh_refusals_change_nothing(api, open_tenant):
    s = register(api, open_tenant)
    cases = [
        ({"refresh_token": {"$ne": None}}, 400, "must be a string"),
        ({"refresh_token": ["rt_x"]}, 400, "must be a string"),
        ({}, 400, "'refresh_token' is required"),
        ({"refresh_token": s["refresh_token"], "sid": s["session_id"]}, 400, "unknown field 'sid'"),
        ({"refresh_token": "rt_" + "0" * 64}, 401, "not valid"),
        ({"refresh_token": s["access_token"][:80]}, 401, "not valid"),
        ({"refresh_token": "x" * 257}, 400, "at most 256"),
    ]
    for body, status, detail in cases:
        r = api.call("POST", "/v1/auth/refresh", body=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert detail in r.json()["detail"], r.json()
    # None of those spent the real token.
    assert refresh(api, s["refresh_token"]).status_code == 200


def test_expired_refresh_token_is_refused(api, open_tenant):
    s = register(api, open_tenant)
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    db.refresh_tokens.update_many({"sid": s["session_id"]}, {"$set": {"expires_at": 0}})
    r = refresh(api, s["refresh_token"])
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_revocation_reaches_a_service_without_the_gateway(api, tenant):
    alice = token_for(api, tenant, "alice")
    assert messaging_direct(alice).status_code == 200
    assert api.call("POST", "/v1/auth/logout", alice).status_code == 204
    r = messaging_direct(alice)
    assert r.status_code == 401 and r.json()["detail"] == "the session was revoked"
