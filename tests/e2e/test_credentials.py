"""Self-service credentials through the gateway: e-mail verification and password reset with
single-use, expiring tokens read from the users topic with a real Kafka consumer (as the
notification service will), password change; brute force against login slows down per
account and per address, alike for real and unknown accounts, in answer and in timing."""

import secrets
import statistics
import time

import pymongo
import requests

from conftest import DBS, MONGO_URI, PORTS, new_tenant, token_for
from users_lib import PASSWORD, events_of, login, problem, register, wait_event

NEW_PASSWORD = "a much better passphrase 2"


def now_ms():
    return int(time.time() * 1000) - 1000


def open_tenant(api):
    return new_tenant(api, self_registration=True)


def test_email_verification_with_a_single_use_token(api):
    t = open_tenant(api)
    t0 = now_ms()
    s = register(api, t, email="Carol@Example.com")
    assert s["user"]["email"] == "carol@example.com" and s["user"]["email_verified"] is False
    ev = wait_event(t0, lambda e: e["type"] == "user.verification_requested" and e["subject"] == s["user"]["id"])
    assert ev["data"]["email"] == "carol@example.com" and ev["tenant"] == t["id"]
    token = ev["data"]["token"]
    # The store keeps a hash only.
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    assert db.onetime_tokens.find_one({"_id": token}) is None
    r = api.call("POST", "/v1/auth/verify-email", body={"token": token})
    assert r.status_code == 200, r.text
    assert r.json()["email_verified"] is True
    problem(api.call("POST", "/v1/auth/verify-email", body={"token": token}), 400, "already used")
    problem(api.call("POST", "/v1/auth/verify-email/request", s["access_token"]), 409, "already verified")
    problem(api.call("POST", "/v1/auth/verify-email", body={"token": "ev_" + "0" * 64}), 400, "invalid")
    problem(api.call("POST", "/v1/auth/verify-email", body={"token": {"$ne": None}}), 400, "must be a string")


def test_verification_can_be_asked_again_and_expires(api):
    t = open_tenant(api)
    s = register(api, t, email="dora@example.com")
    t0 = now_ms()
    r = api.call("POST", "/v1/auth/verify-email/request", s["access_token"])
    assert r.status_code == 202, r.text
    ev = wait_event(t0, lambda e: e["type"] == "user.verification_requested" and e["subject"] == s["user"]["id"])
    db = pymongo.MongoClient(MONGO_URI)[DBS["user"]]
    db.onetime_tokens.update_many({"user_id": s["user"]["id"]}, {"$set": {"expires_at": 0}})
    problem(api.call("POST", "/v1/auth/verify-email", body={"token": ev["data"]["token"]}), 400, "expired")
    no_mail = register(api, t)
    problem(api.call("POST", "/v1/auth/verify-email/request", no_mail["access_token"]), 409, "no e-mail")


def test_password_change_ends_the_other_sessions(api):
    t = open_tenant(api)
    s = register(api, t)
    name = s["user"]["username"]
    other = login(api, t, name).json()
    base = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    problem(api.call("POST", "/v1/auth/password/change", s["access_token"],
                     dict(base, current_password="wrong password!")), 403, "current password is wrong")
    problem(api.call("POST", "/v1/auth/password/change", s["access_token"],
                     dict(base, new_password="short")), 400, "at least 8")
    problem(api.call("POST", "/v1/auth/password/change", s["access_token"],
                     dict(base, new_password="password1")), 400, "most common")
    problem(api.call("POST", "/v1/auth/password/change", s["access_token"],
                     dict(base, new_password=PASSWORD)), 400, "differ")
    problem(api.call("POST", "/v1/auth/password/change", s["access_token"],
                     dict(base, current_password={"$ne": None})), 400, "must be a string")
    assert api.call("POST", "/v1/auth/password/change", s["access_token"], base).status_code == 204
    assert api.call("GET", "/v1/users/me", s["access_token"]).status_code == 200  # this one stays
    problem(api.call("GET", "/v1/users/me", other["access_token"]), 401, "revoked")
    problem(login(api, t, name), 401, "invalid username or password")
    assert login(api, t, name, NEW_PASSWORD).status_code == 200
    # A server-side user has no password to change.
    tenant_user = token_for(api, t, "srv-user")
    problem(api.call("POST", "/v1/auth/password/change", tenant_user, base), 409, "no password")


def test_forgot_and_reset_password(api):
    t = open_tenant(api)
    s = register(api, t, email="erin@example.com")
    name = s["user"]["username"]
    t0 = now_ms()
    for body in ({"tenant_id": t["id"], "username": name.upper()}, {"tenant_id": t["id"], "email": "nobody@example.com"}):
        r = api.call("POST", "/v1/auth/password/forgot", body=body)
        assert r.status_code == 202 and r.json() == {}, r.text
    ev = wait_event(t0, lambda e: e["type"] == "user.password_reset_requested" and e["subject"] == s["user"]["id"])
    assert ev["data"]["email"] == "erin@example.com"
    token = ev["data"]["token"]
    problem(api.call("POST", "/v1/auth/password/reset", body={"token": token, "new_password": "12345678"}),
            400, "most common")  # refused before the token is spent...
    r = api.call("POST", "/v1/auth/password/reset", body={"token": token, "new_password": NEW_PASSWORD})
    assert r.status_code == 204, r.text  # ...so it still works here
    problem(api.call("GET", "/v1/users/me", s["access_token"]), 401, "revoked")  # every session ended
    problem(login(api, t, name), 401)
    assert login(api, t, name, NEW_PASSWORD).status_code == 200
    problem(api.call("POST", "/v1/auth/password/reset", body={"token": token, "new_password": "yet another one 3"}),
            400, "already used")
    # The unknown address got no mail.
    assert not events_of(t0, lambda e: e["type"] == "user.password_reset_requested" and e["tenant"] == t["id"]
                         and e["data"]["email"] == "nobody@example.com")


def test_forgot_answers_alike_for_unknown_accounts(api):
    t = open_tenant(api)
    s = register(api, t, email="fred@example.com")

    def timed(body):
        start = time.monotonic()
        r = api.call("POST", "/v1/auth/password/forgot", body=dict(body, tenant_id=t["id"]))
        return r, time.monotonic() - start

    known, tk = timed({"username": s["user"]["username"]})
    unknown, tu = timed({"username": "no-such-user"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json() == {}
    assert tk >= 0.25 and tu >= 0.25  # padded to the same floor
    problem(api.call("POST", "/v1/auth/password/forgot", body={"tenant_id": t["id"]}), 400, "exactly one")
    problem(api.call("POST", "/v1/auth/password/forgot", body={"tenant_id": t["id"], "username": "a",
                                                                "email": "a@b.co"}), 400, "exactly one")
    problem(api.call("POST", "/v1/auth/password/forgot", body={"tenant_id": t["id"], "username": {"$gt": ""}}),
            400, "must be a string")


def test_brute_force_backs_off_per_account_alike_for_unknown_accounts(api):
    t = open_tenant(api)
    real = register(api, t)["user"]["username"]
    for name in (real, "ghost-" + secrets.token_hex(3)):
        for _ in range(4):
            problem(login(api, t, name, "wrong password"), 401, "invalid username or password")
        problem(login(api, t, name, "wrong password"), 401)  # the 5th failure: backoff begins
        r = login(api, t, name, PASSWORD)                    # even the right password waits
        problem(r, 429, "too many failed attempts")
        assert r.headers["Retry-After"] == "1"
        time.sleep(1.1)
        problem(login(api, t, name, "wrong password"), 401)  # 6th: 2 s
        r = login(api, t, name, "wrong password")
        problem(r, 429)
        assert r.headers["Retry-After"] == "2"
    time.sleep(2.1)
    assert login(api, t, real, PASSWORD).status_code == 200  # and the failures are forgotten
    problem(login(api, t, real, "wrong password"), 401)


def test_failed_login_takes_as_long_for_unknown_accounts(api):
    t = open_tenant(api)
    real = register(api, t)["user"]["username"]
    user_url = f"http://127.0.0.1:{PORTS['user']}/v1/auth/login"

    def duration(name, i):
        # Straight at the user service from distinct client addresses (it believes the
        # gateway's X-Forwarded-For), so the per-address limit does not interfere.
        start = time.monotonic()
        r = requests.post(user_url, json={"tenant_id": t["id"], "username": name, "password": f"wrong {i}"},
                          headers={"X-Forwarded-For": f"198.51.100.{i}"}, timeout=30)
        assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"
        return time.monotonic() - start

    reals = [duration(real, i) for i in range(1, 5)]
    ghosts = [duration(f"ghost{i}", 10 + i) for i in range(1, 5)]
    ratio = statistics.median(reals) / statistics.median(ghosts)
    assert 0.6 < ratio < 1.6, (reals, ghosts)  # one argon2id verification either way


def test_per_address_limit(api):
    t = open_tenant(api)
    user_url = f"http://127.0.0.1:{PORTS['user']}/v1/auth/login"
    ip = f"203.0.113.{secrets.randbelow(250) + 1}"
    codes = []
    for i in range(62):  # LOGIN_IP_PER_MIN = 60: distinct accounts, one address
        r = requests.post(user_url, json={"tenant_id": t["id"], "username": f"spray{i}", "password": "x" * 8},
                          headers={"X-Forwarded-For": f"10.0.0.1, {ip}"}, timeout=30)
        codes.append(r.status_code)
    assert codes[:60] == [401] * 60 and codes[60:] == [429, 429], codes
    assert r.headers["RateLimit-Limit"] == "60" and r.headers["RateLimit-Remaining"] == "0"
    assert int(r.headers["Retry-After"]) >= 1
    # Another address is not limited; a client cannot pick its address through the gateway.
    r = requests.post(user_url, json={"tenant_id": t["id"], "username": "spray", "password": "x" * 8},
                      headers={"X-Forwarded-For": "203.0.113.254"}, timeout=30)
    assert r.status_code == 401
    r = api.call("POST", "/v1/auth/login", body={"tenant_id": t["id"], "username": "spray", "password": "x" * 8},
                 headers={"X-Forwarded-For": ip})
    assert r.status_code == 401, r.text  # the gateway drops the client's X-Forwarded-For
