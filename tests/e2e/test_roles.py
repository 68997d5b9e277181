"""Roles and permissions through the gateway: built-in roles, custom roles per tenant managed
by a tenant_admin (or the tenant's backend), a role change taking effect on the next token,
and nobody granting themselves what they lack."""

import jwt as pyjwt

from conftest import new_tenant, token_for
from users_lib import problem, server


def claims(token):
    return pyjwt.decode(token, options={"verify_signature": False})


def admin_of(api, tenant, uid="root"):
    assert server(api, tenant, "PUT", f"/v1/server/users/{uid}", {"roles": ["tenant_admin"]}).status_code in (200, 201)
    return token_for(api, tenant, uid)


def test_builtin_roles_grant_their_permissions(api, tenant):
    member = token_for(api, tenant, "m1")
    assert claims(member)["roles"] == ["member"] and "message.send" in claims(member)["perms"]
    assert "message.delete.any" not in claims(member)["perms"]
    assert claims(admin_of(api, tenant))["perms"] == ["*"]
    roles = {r["name"]: r for r in api.call("GET", "/v1/roles", member).json()["items"]}
    assert set(roles) == {"tenant_admin", "moderator", "member"} and roles["member"]["builtin"] is True
    assert set(roles["member"]["permissions"]) < set(roles["moderator"]["permissions"])


def test_custom_role_lifecycle_and_next_token(api, tenant):
    root = admin_of(api, tenant)
    r = api.call("PUT", "/v1/roles/support", root, {"permissions": ["user.read", "message.delete.any"]})
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "support", "builtin": False, "permissions": ["user.read", "message.delete.any"]}
    agent = token_for(api, tenant, "agent")
    before = agent
    r = api.call("PUT", "/v1/users/agent/roles", root, {"roles": ["member", "support"]})
    assert r.status_code == 200 and r.json()["roles"] == ["member", "support"]
    assert "message.delete.any" not in claims(before)["perms"]           # old token: unchanged
    after = token_for(api, tenant, "agent")                                # next token: changed
    assert claims(after)["roles"] == ["member", "support"] and "message.delete.any" in claims(after)["perms"]
    r = api.call("PUT", "/v1/roles/support", root, {"permissions": ["user.read"]})
    assert r.status_code == 200
    assert "message.delete.any" not in claims(token_for(api, tenant, "agent"))["perms"]
    names = [x["name"] for x in api.call("GET", "/v1/roles", after).json()["items"]]
    assert names == ["tenant_admin", "moderator", "member", "support"]
    assert api.call("DELETE", "/v1/roles/support", root).status_code == 204
    assert claims(token_for(api, tenant, "agent"))["perms"] == claims(token_for(api, tenant, "plain"))["perms"]
    problem(api.call("DELETE", "/v1/roles/support", root), 404)
    # The tenant's backend may manage roles too.
    assert server(api, tenant, "PUT", "/v1/server/roles/auditor", {"permissions": ["user.read"]}).status_code == 201
    assert server(api, tenant, "DELETE", "/v1/server/roles/auditor").status_code == 204


def test_nobody_grants_themselves_what_they_lack(api, tenant):
    member = token_for(api, tenant, "mallory")
    problem(api.call("PUT", "/v1/roles/evil", member, {"permissions": ["user.read"]}), 403, "role.manage")
    problem(api.call("PUT", "/v1/users/mallory/roles", member, {"roles": ["tenant_admin"]}), 403)
    problem(api.call("DELETE", "/v1/roles/moderator", member), 403)
    problem(api.call("PATCH", "/v1/users/me", member, {"roles": ["tenant_admin"]}), 400, "unknown field")
    assert claims(token_for(api, tenant, "mallory"))["roles"] == ["member"]
    # A moderator cannot manage roles either.
    server(api, tenant, "PUT", "/v1/server/users/mod", {"roles": ["moderator"]})
    problem(api.call("PUT", "/v1/users/mallory/roles", token_for(api, tenant, "mod"), {"roles": ["moderator"]}), 403)


def test_role_bodies_are_checked(api, tenant):
    root = admin_of(api, tenant)
    cases = [
        ("/v1/roles/member", {"permissions": []}, "not tenant_admin"),
        ("/v1/roles/Bad.Name", {"permissions": []}, "custom role name"),
        ("/v1/roles/ok", {"permissions": ["root.everything"]}, "not a permission"),
        ("/v1/roles/ok", {"permissions": ["*"]}, "not a permission"),
        ("/v1/roles/ok", {"permissions": "user.read"}, "array"),
        ("/v1/roles/ok", {"permissions": [{"$ne": None}]}, "not a permission"),
        ("/v1/roles/ok", {"permissions": [], "builtin": True}, "unknown field"),
    ]
    for path, body, detail in cases:
        problem(api.call("PUT", path, root, body), 400, detail)
    for body, detail in [({"roles": ["ghost"]}, "must name a role"), ({"roles": []}, "1..8"),
                         ({"roles": "member"}, "1..8"), ({"roles": [{"$gt": ""}]}, "must name a role")]:
        problem(api.call("PUT", "/v1/users/root/roles", root, body), 400, detail)
    problem(api.call("PUT", "/v1/users/nobody/roles", root, {"roles": ["member"]}), 404)
    other = new_tenant(api)
    token_for(api, other, "stranger")
    problem(api.call("PUT", "/v1/users/stranger/roles", root, {"roles": ["member"]}), 404)
