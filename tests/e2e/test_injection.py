"""Every request body of the user service, field by field: a MongoDB operator object where a
value belongs (`{"$ne": null}`) is a 400, never a query, and fields the body does not own
(mass assignment: roles, status, tenant, id) are refused; nothing changes in the store. The
operations and their fields are read from proto/openapi.yaml, so a new endpoint is covered as
soon as it is documented."""

import pymongo
import pytest
import yaml

from conftest import ADMIN_KEY, DBS, MONGO_URI, ROOT, new_tenant, token_for
from users_lib import register, server

OPENAPI = yaml.safe_load((ROOT / "proto/openapi.yaml").read_text())
USER_PREFIXES = ("/v1/tenants", "/v1/auth", "/v1/users", "/v1/sessions", "/v1/roles", "/v1/server")
OPERATOR = {"$ne": None}
FOREIGN = ("tenant_id", "roles", "status", "id", "is_admin", "$where")


def schema_of(ref):
    return OPENAPI["components"]["schemas"][ref.rsplit("/", 1)[1]]


def body_operations():
    for path, item in OPENAPI["paths"].items():
        if not path.startswith(USER_PREFIXES):
            continue
        for method, op in item.items():
            body = op.get("requestBody") if isinstance(op, dict) else None
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                yield pytest.param(path, method, op, schema_of(ref), id=f"{method.upper()} {path}")


@pytest.fixture(scope="module")
def world(platform):
    from conftest import Api
    api = Api()
    t = new_tenant(api, self_registration=True)
    server(api, t, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    return {"api": api, "tenant": t, "admin": token_for(api, t, "root"),
            "me": register(api, t, email="inj@example.com")}


def call(world, path, method, op, body):
    t = world["tenant"]
    sec = {k for s in op.get("security", []) for k in s}
    headers, auth, token = {}, None, None
    if "adminKey" in sec:
        headers["X-Admin-Key"] = ADMIN_KEY
    if "tenantBasic" in sec:
        auth = (t["api_key"], t["api_secret"])
    if "bearerAuth" in sec:
        token = world["admin"]
    concrete = (path.replace("/v1/tenants/{id}", f"/v1/tenants/{t['id']}")
                .replace("{key}", t["api_key"]).replace("{name}", "support").replace("{id}", "root"))
    return world["api"].call(method.upper(), concrete, token, body, headers=headers, auth=auth)


def snapshot():
    """Every document of the user service, but what background work changes on its own: the
    outbox loses its events once Kafka has them (only their ids are kept, see unchanged) and
    API keys note their last use."""
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    snap = {c: sorted(map(str, db[c].find({}, {"last_used_at": 0})))
            for c in db.list_collection_names() if c != "outbox"}
    snap["outbox"] = {d["_id"] for d in db.outbox.find({}, {"_id": 1})}
    return snap


def unchanged(before, after):
    """Whether nothing was written between the snapshots: the same documents, and no event in
    the outbox that was not there before (delivered ones leave it on their own)."""
    return ({c: v for c, v in after.items() if c != "outbox"} ==
            {c: v for c, v in before.items() if c != "outbox"} and after["outbox"] <= before["outbox"])


@pytest.mark.parametrize("path,method,op,schema", list(body_operations()))
def test_operator_objects_and_foreign_fields_are_refused(world, path, method, op, schema):
    fields = list(schema.get("properties", {}))
    assert fields, f"{path}: a body without documented fields"
    free_form = [f for f in fields if schema["properties"][f].get("type") == "object"
                 and "properties" not in schema["properties"][f]]
    for field in free_form:
        # Custom data is data: an operator-looking object is stored verbatim, as a JSON string,
        # and comes back as it went in; it never reaches a filter or a field name.
        r = call(world, path, method, op, {field: OPERATOR})
        assert r.status_code in (200, 201) and r.json()[field] == OPERATOR, r.text
        stored = pymongo.MongoClient(MONGO_URI)[DBS["user"]].users.find_one(
            {"tenant": world["tenant"]["id"], "id": r.json()["id"]})
        assert stored[f"{field}_json"] == '{"$ne":null}' and field not in stored
    before = snapshot()
    for field in fields:
        if field in free_form:
            continue
        r = call(world, path, method, op, {field: OPERATOR})
        assert r.status_code == 400, (field, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["type"] == "urn:chat:problem:validation", (field, r.json())
    for field in FOREIGN:
        if field in fields:
            continue
        r = call(world, path, method, op, {field: "x"})
        assert r.status_code == 400 and f"unknown field '{field}'" in r.json()["detail"], (field, r.text)
    assert unchanged(before, snapshot()), "a refused body changed the store"
