"""Signing keys: the JWK Set at /.well-known/jwks.json through the gateway, checked with
independent libraries (PyJWT, cryptography), and a key rotation on the running platform: the
newest key signs, tokens of the old one stay valid until it is retired, and the gateway and the
messaging service pick the new key up from the JWK Set on their own."""

import time

import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import KEYS, PORTS, b64url, token_for

PUBLIC = serialization.load_pem_public_key((KEYS / "jwt-public.pem").read_bytes())


def header(token):
    return pyjwt.get_unverified_header(token)


def int_b64url(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def test_jwks_is_public_and_describes_the_signing_key(api):
    r = api.call("GET", "/.well-known/jwks.json")  # no token needed
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/jwk-set+json"
    assert "max-age" in r.headers["Cache-Control"]
    keys = r.json()["keys"]
    assert [k["kid"] for k in keys] == ["k1"]
    k = keys[0]
    assert {k["kty"], k["use"], k["alg"]} == {"RSA", "sig", "RS256"}
    nums = PUBLIC.public_numbers()
    assert k["n"] == int_b64url(nums.n) and k["e"] == int_b64url(nums.e)
    assert not ({"d", "p", "q", "dp", "dq", "qi"} & k.keys()), "no private member is published"


def test_access_tokens_verify_with_the_published_keys_only(api, tenant):
    token = token_for(api, tenant, "alice")
    assert header(token) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    jwks = pyjwt.PyJWKSet.from_dict(api.call("GET", "/.well-known/jwks.json").json())
    key = jwks[header(token)["kid"]].key
    claims = pyjwt.decode(token, key, algorithms=["RS256"], audience="chat-api", issuer="chat-platform")
    assert claims["sub"] == "alice" and claims["tid"] == tenant["id"]
    assert claims["exp"] - claims["iat"] == 900  # 15 minutes by default
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token, other, algorithms=["RS256"], audience="chat-api")


def pem(private_key):
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


@pytest.fixture
def restart_user(platform):
    """Restarts the platform's user service with other signing keys; puts the original back."""
    user = platform["user"]
    original = dict(user.env)

    def restart(private_key_file):
        assert user.stop() == 0
        user.env = dict(original, JWT_PRIVATE_KEY_FILE=private_key_file)
        user.start()

    yield restart
    assert user.stop() == 0
    user.env = original
    user.start()
    # Verifiers may hold a set without k1 now; they refetch on the next k1 token once
    # JWT_JWKS_MIN_REFRESH_S (1 s here) has passed since their last fetch.
    time.sleep(1.2)


def kids(api):
    return [k["kid"] for k in api.call("GET", "/.well-known/jwks.json").json()["keys"]]


def me(api, token):
    return api.call("GET", "/v1/users/me", token)


def conversations(token):
    # Straight at the messaging service: it verifies with the JWK Set it fetched itself.
    return requests.get(f"http://127.0.0.1:{PORTS['messaging']}/v1/conversations",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_rotation_new_key_signs_old_tokens_live_until_retired(api, tenant, restart_user, tmp_path):
    k1 = KEYS / "jwt-private.pem"
    k2 = tmp_path / "k2.pem"
    k2.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    old = token_for(api, tenant, "alice")
    assert header(old)["kid"] == "k1"

    # Phase 1: k2 added as the newest key. It signs; k1 tokens still work everywhere.
    restart_user(f"k1={k1},k2={k2}")
    assert kids(api) == ["k1", "k2"]
    new = token_for(api, tenant, "alice")
    assert header(new)["kid"] == "k2"
    # Verifiers refetch on an unknown kid at most once per JWT_JWKS_MIN_REFRESH_S (1 s here);
    # the platform may have started less than a second ago.
    time.sleep(1.2)
    for token in (old, new):
        assert me(api, token).status_code == 200          # gateway, then the user service
        assert conversations(token).status_code == 200    # the messaging service directly
        assert api.call("GET", "/v1/conversations", token).status_code == 200

    # Phase 2: k1 retired once its tokens have expired. After their next look at the JWK Set
    # (here forced by a token naming a kid they do not know) verifiers refuse k1 tokens.
    restart_user(f"k2={k2}")
    assert kids(api) == ["k2"]
    time.sleep(1.2)  # JWT_JWKS_MIN_REFRESH_S=1 in the test environment
    forged = pyjwt.encode({"sub": "x"}, pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                          algorithm="RS256", headers={"kid": "k9"})
    assert me(api, forged).status_code == 401
    assert conversations(forged).status_code == 401
    for r in (me(api, old), conversations(old)):
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "the token key id (kid) is unknown"
    assert me(api, new).status_code == 200
    assert conversations(new).status_code == 200


def test_a_key_list_with_a_bad_entry_keeps_the_service_down(platform, tmp_path):
    """A malformed key configuration is a start-up error, never a service without keys."""
    from conftest import Service

    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    s = Service("user", {"JWT_PRIVATE_KEY_FILE": f"k1={KEYS / 'jwt-private.pem'},k2={bad}",
                         "HTTP_PORT": str(PORTS["user"] + 50)})
    s.port = PORTS["user"] + 50
    with pytest.raises(RuntimeError, match="exited with 1"):
        s.start()
