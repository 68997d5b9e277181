"""Users through the gateway: the tenant backend's server-side API (upsert, deactivate,
reactivate, delete), the profile (me, another user of the tenant, prefix search honouring
`discoverable`), with user.created/updated/deleted read back from Kafka; mass assignment and
operator injection refused on every body."""

import time

import pymongo
import requests

from conftest import DBS, MONGO_URI, PORTS, new_tenant, token_for
from users_lib import problem, register, server, wait_event

BIG_METADATA = {"notes": "x" * 4090}  # 4104 bytes as JSON: over the 4096 cap


def now_ms():
    return int(time.time() * 1000) - 1000


def test_server_upsert_creates_then_sets_fields(api, tenant):
    t0 = now_ms()
    r = server(api, tenant, "PUT", "/v1/server/users/ada", {
        "name": "Ada Lovelace", "metadata": {"plan": "pro", "tags": ["a", "b"]},
        "avatar_media_id": "0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81", "email": "Ada@Example.com",
        "roles": ["moderator"]})
    assert r.status_code == 201, r.text
    u = r.json()
    assert r.headers["Location"] == "ada"
    assert u["name"] == "Ada Lovelace" and u["metadata"] == {"plan": "pro", "tags": ["a", "b"]}
    assert u["email"] == "ada@example.com" and u["email_verified"] is True
    assert u["roles"] == ["moderator"] and u["status"] == "active" and u["discoverable"] is True
    ev = wait_event(t0, lambda e: e["type"] == "user.created" and e["subject"] == "ada"
                    and e["tenant"] == tenant["id"])
    assert ev["data"]["name"] == "Ada Lovelace" and "email" not in ev["data"]

    r = server(api, tenant, "PUT", "/v1/server/users/ada", {"name": "Ada", "avatar_media_id": None})
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["name"] == "Ada" and u["avatar_media_id"] is None
    assert u["metadata"] == {"plan": "pro", "tags": ["a", "b"]}, "absent fields keep their value"
    wait_event(t0, lambda e: e["type"] == "user.updated" and e["subject"] == "ada" and e["data"]["name"] == "Ada")
    assert server(api, tenant, "GET", "/v1/server/users/ada").json() == u
    # The token carries the role and the permissions it grants.
    tok = token_for(api, tenant, "ada")
    import jwt as pyjwt
    claims = pyjwt.decode(tok, options={"verify_signature": False})
    assert claims["roles"] == ["moderator"] and "message.delete.any" in claims["perms"]


def test_server_bodies_are_checked_and_change_nothing(api, tenant):
    assert server(api, tenant, "PUT", "/v1/server/users/bea", {"name": "Bea"}).status_code == 201
    before = server(api, tenant, "GET", "/v1/server/users/bea").json()
    cases = [
        ({"status": "deactivated"}, "unknown field 'status'"),
        ({"tenant_id": new_tenant(api)["id"]}, "unknown field 'tenant_id'"),
        ({"id": "other"}, "unknown field 'id'"),
        ({"name": {"$ne": None}}, "must be a string"),
        ({"name": ""}, "at least 1"),
        ({"name": "   "}, "blank"),
        ({"name": "a\u0007b"}, "control"),
        ({"metadata": BIG_METADATA}, "at most 4096"),
        ({"metadata": [1]}, "must be an object"),
        ({"metadata": {"a": {"b": {"c": {"d": {}}}}}}, "deeper"),
        ({"avatar_media_id": "not-a-uuid"}, "media id"),
        ({"avatar_media_id": {"$gt": ""}}, "media id"),
        ({"email": "nope"}, "e-mail"),
        ({"roles": ["superuser"]}, "must name a role"),
        ({"roles": "moderator"}, "array"),
        ({"roles": []}, "at least one role"),
        ({"roles": ["member", "member"]}, "repeats"),
        ({"discoverable": "yes"}, "must be a boolean"),
    ]
    for body, detail in cases:
        problem(server(api, tenant, "PUT", "/v1/server/users/bea", body), 400, detail)
    problem(server(api, tenant, "PUT", "/v1/server/users/bad%20id", {}), 400, "user id")
    assert server(api, tenant, "GET", "/v1/server/users/bea").json() == before


def test_server_api_needs_the_tenant_key_and_sees_only_its_tenant(api, tenant):
    other = new_tenant(api)
    assert server(api, other, "PUT", "/v1/server/users/carl", {"name": "Carl"}).status_code == 201
    problem(server(api, tenant, "GET", "/v1/server/users/carl"), 404)
    problem(server(api, tenant, "DELETE", "/v1/server/users/carl"), 404)
    problem(server(api, tenant, "POST", "/v1/server/users/carl/deactivate"), 404)
    problem(api.call("GET", "/v1/server/users/carl"), 401)
    alice = token_for(api, tenant, "alice")
    problem(api.call("PUT", "/v1/server/users/alice", alice, {"roles": ["tenant_admin"]}), 401)
    assert server(api, other, "GET", "/v1/server/users/carl").json()["status"] == "active"


def test_deactivate_ends_sessions_and_blocks_tokens_until_reactivated(api, tenant):
    r = api.call("POST", "/v1/auth/token", body={"user_id": "dan"}, auth=(tenant["api_key"], tenant["api_secret"]))
    pair = r.json()
    r = server(api, tenant, "POST", "/v1/server/users/dan/deactivate")
    assert r.status_code == 200 and r.json()["status"] == "deactivated"
    problem(api.call("GET", "/v1/users/me", pair["access_token"]), 401, "the session was revoked")
    problem(api.call("POST", "/v1/auth/refresh", body={"refresh_token": pair["refresh_token"]}), 401)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "dan"},
                     auth=(tenant["api_key"], tenant["api_secret"])), 403, "deactivated")
    r = server(api, tenant, "POST", "/v1/server/users/dan/reactivate")
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert api.call("GET", "/v1/users/me", token_for(api, tenant, "dan")).status_code == 200


def test_delete_erases_the_user_and_publishes_user_deleted(api, tenant):
    t0 = now_ms()
    r = api.call("POST", "/v1/auth/token", body={"user_id": "eve"}, auth=(tenant["api_key"], tenant["api_secret"]))
    eve = r.json()
    assert server(api, tenant, "DELETE", "/v1/server/users/eve").status_code == 204
    problem(server(api, tenant, "GET", "/v1/server/users/eve"), 404)
    problem(server(api, tenant, "DELETE", "/v1/server/users/eve"), 404)
    problem(api.call("GET", "/v1/users/me", eve["access_token"]), 401, "the session was revoked")
    problem(api.call("POST", "/v1/auth/refresh", body={"refresh_token": eve["refresh_token"]}), 401)
    ev = wait_event(t0, lambda e: e["type"] == "user.deleted" and e["subject"] == "eve" and e["tenant"] == tenant["id"])
    assert ev["data"]["erase_policy"] == "anonymize" and ev["_key"] == "eve"
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    for coll in ("users", "sessions", "refresh_tokens", "credentials"):
        assert db[coll].count_documents({"tenant": tenant["id"], "$or": [{"id": "eve"}, {"user_id": "eve"}]}) == 0, coll


def test_profile_me_update_and_mass_assignment(api, tenant):
    t0 = now_ms()
    tok = token_for(api, tenant, "fay")
    r = api.call("PATCH", "/v1/users/me", tok, {"name": "Fay", "metadata": {"color": "teal"},
                                               "discoverable": False})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Fay" and r.json()["discoverable"] is False
    wait_event(t0, lambda e: e["type"] == "user.updated" and e["subject"] == "fay" and e["data"]["name"] == "Fay")
    before = api.call("GET", "/v1/users/me", tok).json()
    for body, detail in [({"roles": ["tenant_admin"]}, "unknown field 'roles'"),
                         ({"tenant_id": "x"}, "unknown field 'tenant_id'"),
                         ({"status": "active"}, "unknown field 'status'"),
                         ({"id": "root"}, "unknown field 'id'"),
                         ({"email": "f@example.com"}, "unknown field 'email'"),
                         ({"name": {"$set": {"roles": ["tenant_admin"]}}}, "must be a string"),
                         ({"metadata": BIG_METADATA}, "at most 4096")]:
        problem(api.call("PATCH", "/v1/users/me", tok, body), 400, detail)
    assert api.call("GET", "/v1/users/me", tok).json() == before
    import jwt as pyjwt
    assert pyjwt.decode(token_for(api, tenant, "fay"), options={"verify_signature": False})["roles"] == ["member"]


def test_get_another_user_of_my_tenant_only(api, tenant):
    server(api, tenant, "PUT", "/v1/server/users/gus", {"name": "Gus", "email": "gus@example.com"})
    me = token_for(api, tenant, "hal")
    r = api.call("GET", "/v1/users/gus", me)
    assert r.status_code == 200 and r.json()["name"] == "Gus"
    assert "email" not in r.json() and "roles" not in r.json()
    problem(api.call("GET", "/v1/users/nobody", me), 404)
    stranger = token_for(api, new_tenant(api), "hal")
    problem(api.call("GET", "/v1/users/gus", stranger), 404)
    problem(requests.get(f"http://127.0.0.1:{PORTS['user']}/v1/users/gus",
                         headers={"Authorization": f"Bearer {stranger}"}), 404)


def test_search_by_prefix_honours_discoverable(api, tenant):
    for uid, body in [("s1", {"name": "Alice Smith"}), ("s2", {"name": "Alina Stone"}),
                      ("s3", {"name": "Albert Hidden", "discoverable": False}),
                      ("s4", {"name": "Alfred Gone"}), ("s5", {"name": "Bob Alder"})]:
        assert server(api, tenant, "PUT", f"/v1/server/users/{uid}", body).status_code in (200, 201)
    server(api, tenant, "POST", "/v1/server/users/s4/deactivate")
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/s9", {"name": "Alison Elsewhere"})
    me = token_for(api, tenant, "searcher")

    def ids(q, extra=""):
        r = api.call("GET", f"/v1/users?q={q}{extra}", me)
        assert r.status_code == 200, r.text
        return [u["id"] for u in r.json()["items"]]

    assert ids("ali") == ["s1", "s2"]       # hidden, deactivated and foreign users left out
    assert ids("ALI") == ["s1", "s2"]       # ASCII case-insensitive
    assert ids("smi") == ["s1"]             # any word of the name
    assert ids("ald") == ["s5"]
    assert ids("alice%20smith") == ["s1"]   # the whole name
    assert ids("zzz") == []
    page = api.call("GET", "/v1/users?q=al&limit=1", me).json()
    assert [u["id"] for u in page["items"]] == ["s1"] and page["next_cursor"] == "s1"
    assert ids("al", "&limit=1&cursor=s1") == ["s2"]
    # A self-registered user is found by username too.
    open_t = new_tenant(api, self_registration=True)
    reg = register(api, open_t, username="zoe.q", name="Zoe")
    other_me = token_for(api, open_t, "x")
    r = api.call("GET", "/v1/users?q=zoe.", other_me)
    assert [u["id"] for u in r.json()["items"]] == [reg["user"]["id"]]
    for bad in ("", "a" * 65, "%07"):
        problem(api.call("GET", f"/v1/users?q={bad}", me), 400, "'q'")
    problem(api.call("GET", "/v1/users", me), 400, "'q'")
    problem(api.call("GET", "/v1/users?q=a&cursor=bad%20cursor", me), 400, "cursor")
