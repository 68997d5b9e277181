"""The contracts tell the truth about the user service: every route it serves is in
proto/openapi.yaml, every event type it publishes has a JSON Schema listed in
proto/asyncapi.yaml, and real answers through the gateway validate against the documented
response schemas."""

import json
import re

import pytest
import referencing
import referencing.jsonschema
import yaml
from jsonschema import Draft202012Validator

from conftest import ROOT, new_tenant, token_for
from users_lib import register, server

OPENAPI = yaml.safe_load((ROOT / "proto/openapi.yaml").read_text())
ASYNCAPI = yaml.safe_load((ROOT / "proto/asyncapi.yaml").read_text())
USER_SRC = sorted((ROOT / "services/user").glob("*.c"))


def test_every_user_route_is_documented():
    main = (ROOT / "services/user/main.c").read_text()
    routes = re.findall(r'cm_http_route\(srv, "([A-Z]+)", "([^"]+)"', main)
    assert len(routes) > 30
    missing = [f"{m} {p}" for m, p in routes
               if p not in OPENAPI["paths"] or m.lower() not in OPENAPI["paths"][p]]
    assert not missing, f"routes missing from proto/openapi.yaml: {missing}"


def test_every_published_event_has_a_schema_in_asyncapi():
    text = "\n".join(p.read_text() for p in USER_SRC)
    types = set(re.findall(r'"((?:user|session)\.[a-z_]{2,})"', text))
    assert {"user.created", "user.updated", "user.deleted", "session.revoked",
            "user.verification_requested", "user.password_reset_requested"} <= types
    # Kafka events reference their schema file; WebSocket frames (channel ws) are inline.
    listed = {m["payload"]["$ref"] for m in ASYNCAPI["components"]["messages"].values()
              if "$ref" in m.get("payload", {})}
    for t in types:
        schema = ROOT / f"proto/events/{t}.schema.json"
        assert schema.exists(), t
        assert json.loads(schema.read_text())["title"] == t
        assert f"./events/{t}.schema.json" in listed, f"{t} not in asyncapi.yaml"


REGISTRY = referencing.Registry().with_resource(
    "urn:openapi", referencing.jsonschema.DRAFT202012.create_resource(OPENAPI))


def check(r, path, method, status=None):
    """Validates the JSON answer against the documented schema of (path, method, status)."""
    status = str(status or r.status_code)
    assert r.status_code == int(status), r.text
    resp = OPENAPI["paths"][path][method]["responses"][status]
    if "$ref" in resp:
        resp = OPENAPI["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    media = resp["content"]
    ctype = r.headers["Content-Type"].split(";")[0]
    assert ctype in media, (ctype, list(media))
    ref = media[ctype]["schema"]["$ref"]
    Draft202012Validator({"$ref": "urn:openapi" + ref}, registry=REGISTRY).validate(r.json())


@pytest.fixture
def world(api):
    t = new_tenant(api, self_registration=True)
    return {"tenant": t, "me": register(api, t, email="zed@example.com"),
            "alice": token_for(api, t, "alice")}


def test_answers_match_the_documented_schemas(api, world):
    t, me = world["tenant"], world["me"]
    admin = {"X-Admin-Key": __import__("conftest").ADMIN_KEY}
    check(api.call("GET", f"/v1/tenants/{t['id']}", headers=admin), "/v1/tenants/{id}", "get")
    check(api.call("GET", "/v1/tenants?limit=2", headers=admin), "/v1/tenants", "get")
    check(api.call("GET", f"/v1/tenants/{t['id']}/api-keys", headers=admin), "/v1/tenants/{id}/api-keys", "get")
    check(api.call("POST", "/v1/tenants", body={"name": "c"}, headers=admin), "/v1/tenants", "post")
    check(api.call("GET", "/.well-known/jwks.json"), "/.well-known/jwks.json", "get")
    check(api.call("GET", "/v1/users/me", me["access_token"]), "/v1/users/me", "get")
    check(api.call("PATCH", "/v1/users/me", me["access_token"], {"metadata": {"a": 1}}), "/v1/users/me", "patch")
    check(api.call("GET", "/v1/users/alice", me["access_token"]), "/v1/users/{id}", "get")
    check(api.call("GET", "/v1/users?q=a", me["access_token"]), "/v1/users", "get")
    check(api.call("GET", "/v1/sessions", me["access_token"]), "/v1/sessions", "get")
    check(api.call("GET", "/v1/roles", me["access_token"]), "/v1/roles", "get")
    check(api.call("POST", "/v1/users/me/exports", me["access_token"]), "/v1/users/me/exports", "post", 202)
    check(api.call("GET", "/v1/users/me/blocks", me["access_token"]), "/v1/users/me/blocks", "get")
    check(server(api, t, "PUT", "/v1/server/roles/ops", {"permissions": ["user.read"]}),
          "/v1/server/roles/{name}", "put", 201)
    check(api.call("POST", "/v1/auth/refresh", body={"refresh_token": me["refresh_token"]}), "/v1/auth/refresh", "post")
    check(server(api, t, "PUT", "/v1/server/users/neo", {"roles": ["moderator"]}), "/v1/server/users/{id}", "put", 201)
    check(server(api, t, "GET", "/v1/server/users/neo"), "/v1/server/users/{id}", "get")
    check(api.call("POST", "/v1/auth/password/forgot", body={"tenant_id": t["id"], "username": "x"}),
          "/v1/auth/password/forgot", "post", 202)
    # Problems too.
    check(api.call("GET", "/v1/users/nobody", me["access_token"]), "/v1/users/{id}", "get", 404)
    check(api.call("POST", "/v1/auth/refresh", body={"refresh_token": 1}), "/v1/auth/refresh", "post", 400)
