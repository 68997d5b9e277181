"""Bad input through the gateway: each gets a precise 4xx problem+json and changes nothing.
Forged, expired and foreign tokens are refused by the gateway and by the services directly."""

import hashlib
import hmac
import json
import time

import jwt as pyjwt
import pytest
import requests

from conftest import KEYS, PORTS, b64url, new_tenant, token_for

PRIVATE = (KEYS / "jwt-private.pem").read_bytes()
PUBLIC = (KEYS / "jwt-public.pem").read_bytes()


def claims(tenant_id, user="mallory", **over):
    now = int(time.time())
    c = {"sub": user, "tid": tenant_id, "sid": "s", "roles": ["member"], "iss": "chat-platform",
         "aud": "chat-api", "iat": now, "nbf": now, "exp": now + 600}
    c.update(over)
    return c


def rs256(c, kid="k1"):
    return pyjwt.encode(c, PRIVATE, algorithm="RS256", headers={"kid": kid})


def unsigned(c):
    return b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + b64url(json.dumps(c).encode()) + "."


def hs256_with_public_key(c):
    """The key-confusion attack: HMAC-SHA256 keyed with the RSA public key's PEM text."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64url(json.dumps(c).encode())
    sig = hmac.new(PUBLIC, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


@pytest.fixture
def setup(api, tenant, mongo):
    alice = token_for(api, tenant, "alice")
    token_for(api, tenant, "bob")
    cid = api.call("POST", "/v1/conversations", alice, {"type": "direct", "members": ["bob"]}).json()["id"]
    assert api.call("POST", f"/v1/conversations/{cid}/messages", alice, {"text": "seed"}).status_code == 201
    return {"tenant": tenant, "alice": alice, "cid": cid, "count": lambda: mongo.messages.count_documents({"conversation_id": cid})}


def problem(r, status, detail_part=None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    p = r.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= p.keys()
    assert p["status"] == status
    if detail_part:
        assert detail_part in p["detail"], p["detail"]
    return p


BAD_BODIES = [
    (b'{"text": "unterminated', 400, "invalid JSON"),
    (b'[1, 2]', 400, "JSON object"),
    (b'{"text": 42}', 400, "must be a string"),
    (b'{}', 400, "'text' is required"),
    (b'{"text": "hi", "admin": true}', 400, "unknown field 'admin'"),
    (b'{"text": "\xff\xfe"}', 400, "UTF-8"),
    (b'{"text": ""}', 400, "must not be empty"),
    (b'{"text": "   "}', 400, "whitespace"),
    (b'{"text": "bell\\u0007"}', 400, "control characters"),
    (b'{"text": "hi", "client_msg_id": "has space"}', 400, "client_msg_id"),
    (b'{"text": {"$ne": null}}', 400, "must be a string"),
    (b'[' * 100 + b']' * 100, 400, "deeper"),
    (b'{"text": "hi\\u0000there"}', 400, "U+0000"),
]


@pytest.mark.parametrize("raw,status,detail", BAD_BODIES)
def test_malformed_send_bodies(api, setup, raw, status, detail):
    before = setup["count"]()
    r = api.call("POST", f"/v1/conversations/{setup['cid']}/messages", setup["alice"], raw=raw)
    problem(r, status, detail)
    assert setup["count"]() == before


def test_text_length_is_counted_in_characters(api, setup):
    ok = api.call("POST", f"/v1/conversations/{setup['cid']}/messages", setup["alice"], {"text": "é" * 5000})
    assert ok.status_code == 201
    before = setup["count"]()
    r = api.call("POST", f"/v1/conversations/{setup['cid']}/messages", setup["alice"], {"text": "é" * 5001})
    problem(r, 400, "5000")
    assert setup["count"]() == before


def test_wrong_content_type_and_oversized_body(api, setup):
    before = setup["count"]()
    r = api.call("POST", f"/v1/conversations/{setup['cid']}/messages", setup["alice"],
                 raw=b'{"text":"hi"}', headers={"Content-Type": "text/plain"})
    problem(r, 415)
    r = api.call("POST", f"/v1/conversations/{setup['cid']}/messages", setup["alice"],
                 raw=b'{"text":"' + b"a" * (2 << 20) + b'"}')
    problem(r, 413, "limit")
    assert setup["count"]() == before


def test_unknown_foreign_and_non_member_conversations_are_404(api, setup):
    cid, alice = setup["cid"], setup["alice"]
    for bad in ["not-a-uuid", "0190a000-0000-7000-8000-000000000000"]:
        problem(api.call("POST", f"/v1/conversations/{bad}/messages", alice, {"text": "x"}), 404)
        problem(api.call("GET", f"/v1/conversations/{bad}/messages", alice), 404)
    outsider = token_for(api, setup["tenant"], "carol")
    problem(api.call("POST", f"/v1/conversations/{cid}/messages", outsider, {"text": "x"}), 404)
    problem(api.call("GET", f"/v1/conversations/{cid}/messages", outsider), 404)
    other = new_tenant(api)
    foreign = token_for(api, other, "alice")  # same user id, another tenant
    problem(api.call("POST", f"/v1/conversations/{cid}/messages", foreign, {"text": "x"}), 404)
    problem(api.call("GET", f"/v1/conversations/{cid}/messages", foreign), 404)
    assert cid not in [c["id"] for c in api.call("GET", "/v1/conversations", foreign).json()["items"]]


def test_bad_conversation_creation(api, setup):
    alice = setup["alice"]
    cases = [
        ({"type": "direct", "members": []}, "exactly one other member"),
        ({"type": "direct", "members": ["bob", "carol"]}, "exactly one other member"),
        ({"type": "direct", "members": ["alice"]}, "exactly one other member"),
        ({"type": "direct", "members": ["bob"], "title": "x"}, "no title"),
        ({"type": "broadcast"}, "'direct', 'group' or 'channel'"),
        ({"type": "group", "members": "bob"}, "array"),
        ({"type": "group", "members": ["bad id!"]}, "user ids"),
        ({"type": "group", "title": "t" * 201}, "at most 200"),
    ]
    for body, detail in cases:
        problem(api.call("POST", "/v1/conversations", alice, body), 400, detail)


def test_bad_query_parameters(api, setup):
    base = f"/v1/conversations/{setup['cid']}/messages"
    problem(api.call("GET", base + "?direction=sideways", setup["alice"]), 400, "direction")
    problem(api.call("GET", base + "?cursor=-5", setup["alice"]), 400, "cursor")
    problem(api.call("GET", base + "?limit=abc", setup["alice"]), 400, "limit")
    problem(api.call("GET", "/v1/conversations?cursor=garbage", setup["alice"]), 400, "cursor")
    assert api.call("GET", base + "?cursor=", setup["alice"]).status_code == 200  # empty: first page


def forged_tokens(tenant_id):
    now = int(time.time())
    return {
        "alg none": unsigned(claims(tenant_id)),
        "HMAC signed with the public key": hs256_with_public_key(claims(tenant_id)),
        "expired": rs256(claims(tenant_id, iat=now - 4000, nbf=now - 4000, exp=now - 3000)),
        "not yet valid": rs256(claims(tenant_id, nbf=now + 3000, exp=now + 4000)),
        "wrong audience": rs256(claims(tenant_id, aud="someone-else")),
        "wrong issuer": rs256(claims(tenant_id, iss="evil")),
        "unknown kid": rs256(claims(tenant_id), kid="k9"),
        "no tenant": rs256({k: v for k, v in claims(tenant_id).items() if k != "tid"}),
        "garbage": "abc.def.ghi",
    }


@pytest.mark.parametrize("which", list(forged_tokens("x").keys()))
def test_forged_and_expired_tokens_are_refused_everywhere(api, setup, which):
    token = forged_tokens(setup["tenant"]["id"])[which]
    before = setup["count"]()
    # Through the gateway...
    problem(api.call("POST", f"/v1/conversations/{setup['cid']}/messages", token, {"text": "x"}), 401)
    problem(api.call("GET", "/v1/users/me", token), 401)
    # ...and straight at the services: a service reached directly is no open door.
    r = requests.post(f"http://127.0.0.1:{PORTS['messaging']}/v1/conversations/{setup['cid']}/messages",
                      json={"text": "x"}, headers={"Authorization": f"Bearer {token}"})
    problem(r, 401)
    r = requests.get(f"http://127.0.0.1:{PORTS['user']}/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    problem(r, 401)
    assert setup["count"]() == before


def test_missing_and_malformed_authorization(api, setup):
    problem(api.call("GET", "/v1/conversations"), 401, "access token is required")
    problem(api.call("GET", "/v1/conversations", headers={"Authorization": "Basic abc"}), 401, "Bearer")


def test_valid_token_for_another_tenant_sees_nothing(api, setup):
    # A correctly signed token naming tenant B cannot read tenant A's conversation.
    other = new_tenant(api)
    token = rs256(claims(other["id"], user="alice"))
    problem(api.call("GET", f"/v1/conversations/{setup['cid']}/messages", token), 404)


def test_tenant_and_token_endpoints_check_their_keys(api, tenant):
    problem(api.call("POST", "/v1/tenants", body={"name": "x"}), 401)
    problem(api.call("POST", "/v1/tenants", body={"name": "x"}, headers={"X-Admin-Key": "wrong"}), 401)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "u"}), 401)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "u"}, auth=(tenant["api_key"], "cs_wrong")), 401)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": "bad id"}, auth=(tenant["api_key"], tenant["api_secret"])), 400)
    problem(api.call("POST", "/v1/auth/token", body={"user_id": {"$ne": None}}, auth=(tenant["api_key"], tenant["api_secret"])), 400)
    problem(api.call("POST", "/v1/auth/login", body={"tenant_id": {"$ne": None}, "username": "a", "password": "b"}), 400)


def test_unknown_route_and_method(api, setup):
    problem(api.call("GET", "/v1/nothing-here", setup["alice"]), 404)
    r = api.call("DELETE", "/v1/conversations", setup["alice"])
    problem(r, 405)
    assert r.headers["Allow"] == "POST, GET"
    r = requests.post(f"http://127.0.0.1:{PORTS['messaging']}/health/live")
    problem(r, 405)
    assert r.headers["Allow"] == "GET, HEAD"


def test_challenges_name_the_right_scheme(api, tenant):
    assert api.call("GET", "/v1/users/me").headers["WWW-Authenticate"] == "Bearer"
    r = api.call("POST", "/v1/auth/token", body={"user_id": "u"}, auth=(tenant["api_key"], "cs_wrong"))
    assert r.headers["WWW-Authenticate"].startswith("Basic")
