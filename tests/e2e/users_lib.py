"""Helpers shared by the user-service tests: accounts, problems, events checked against their
JSON Schemas."""

import json
import secrets

import jsonschema

from conftest import ROOT, read_events

PASSWORD = "correct horse battery staple"


def problem(r, status, detail=None):
    """Asserts an RFC 9457 problem with `status` whose detail contains `detail`."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= p.keys()
    if detail:
        assert detail in p["detail"], p["detail"]
    return p


def register(api, tenant, username=None, device=None, email=None, password=PASSWORD, name=None):
    body = {"tenant_id": tenant["id"], "username": username or "u" + secrets.token_hex(4),
            "password": password}
    for k, v in (("device_name", device), ("email", email), ("name", name)):
        if v:
            body[k] = v
    r = api.call("POST", "/v1/auth/register", body=body, headers={"User-Agent": "pytest/1.0"})
    assert r.status_code == 201, r.text
    return r.json()


def login(api, tenant, username, password=PASSWORD, device=None, headers=None):
    body = {"tenant_id": tenant["id"], "username": username, "password": password}
    if device:
        body["device_name"] = device
    return api.call("POST", "/v1/auth/login", body=body, headers=headers)


def server(api, tenant, method, path, body=None):
    """A call of the tenant's backend (HTTP Basic api_key:api_secret)."""
    return api.call(method, path, body=body, auth=(tenant["api_key"], tenant["api_secret"]))


def validate(event):
    """Validates a CloudEvent read from Kafka against proto/events/<type>.schema.json."""
    schema = json.loads((ROOT / f"proto/events/{event['type']}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate({k: v for k, v in event.items() if k != "_key"})
    return event


def wait_event(since_ms, match, timeout=30.0):
    """The first event on `users` from since_ms for which match(event) holds, validated."""
    events = read_events("users", lambda evs: any(match(e) for e in evs), since_ms, timeout)
    found = [e for e in events if match(e)]
    assert found, "no matching event on the users topic"
    return validate(found[0])


def events_of(since_ms, match, settle=3.0):
    """Every matching event within `settle` seconds (for asserting that none was sent)."""
    return [e for e in read_events("users", lambda evs: False, since_ms, settle) if match(e)]
