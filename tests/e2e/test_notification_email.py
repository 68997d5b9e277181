"""E-mail notifications end to end, against a real SMTP server (aiosmtpd on base+22): the
user service's verification and password-reset tokens arrive by mail and work; a message
reaches the addresses of the users who want e-mail for its type, rendered from the default
templates with the message's text HTML-escaped in the HTML part; 4xx answers are retried at
the configured delays then dead-lettered and can be redriven, 5xx ones fail at once; every
attempt is in the deliveries and every decision in the diagnostics.

The waits are long (120 s): the notification consumer reads the shared topics, where the
other checkouts' suites and benchmarks may queue thousands of recipients ahead of ours."""

import re
import signal
import secrets
import time

import pytest
import requests

from chat import create, ok, problem, send, validate_event
from conftest import DB_SUFFIX, PORTS, new_tenant, read_events, token_for
from smtp_server import Mailbox, bodies
from users_lib import register, server

APP_URL = "https://app.example.test"


@pytest.fixture(scope="module")
def mailbox(platform):
    """The SMTP server, and the notification service restarted to mail through it with short
    retry delays (the defaults are 1 s, 5 s, 30 s) and digests of what is unread after 4 s."""
    box = Mailbox(PORTS["notification"] + 2).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    # A fresh consumer group starts at the latest offset: the restarted service does not
    # first work through what the other checkouts' suites produced on the shared topics
    # since this run's group last committed (thousands of records when several run at once).
    svc.env["NOTIFY_GROUP"] = f"e2e-notification-{DB_SUFFIX}-mail"
    svc.env.update({"SMTP_URL": box.url, "SMTP_FROM": "chat@example.test",
                    "SMTP_FROM_NAME": "Chat Écho", "NOTIFY_APP_URL": APP_URL,
                    "PUSH_RETRY_DELAYS_MS": "300,600,900", "NOTIFY_DIGEST_AFTER_S": "4"})
    svc.start()
    yield box
    box.stop()


@pytest.fixture
def team(api):
    """A tenant with ann, bob and cat, an admin (the tenant's backend) and addresses for all."""
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    t = {u: token_for(api, tenant, u) for u in ("ann", "bob", "cat", "root")}
    tag = secrets.token_hex(4)
    addr = {u: f"{u}.{tag}@example.test" for u in ("ann", "bob", "cat")}
    for u, a in addr.items():
        ok(api.call("PUT", f"/v1/notifications/contacts/{u}", t["root"], {"email": a}))
    return tenant, t, addr


def want_email(api, token, types=("message",)):
    body = {"types": {ty: {"email": True} for ty in types}}
    ok(api.call("PUT", "/v1/notifications/preferences", token, body))


def diagnose(api, token, user, mid, until, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        d = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id={user}&message_id={mid}", token))
        got = [(x["channel"], x["decision"]) for x in d["decisions"]]
        if until(got):
            return d, got
        assert time.time() < deadline, d
        time.sleep(0.1)


def deliveries(api, token, nid, platform="email"):
    items = ok(api.call("GET", f"/v1/notifications/{nid}/deliveries", token))["items"]
    return [d for d in items if d["platform"] == platform]


def notification_of(api, token, mid, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        items = ok(api.call("GET", "/v1/notifications?limit=100", token))["items"]
        for n in items:
            if n.get("message_id") == mid:
                return n
        assert time.time() < deadline
        time.sleep(0.1)


# --- account e-mails from the users topic ----------------------------------------------------

def email_scans():
    metrics = requests.get(f"http://127.0.0.1:{PORTS['notification']}/metrics", timeout=10).text
    return int(next(line.split()[1] for line in metrics.splitlines()
                    if line.startswith("notification_email_scans_total")))


def test_an_idle_sender_does_not_scan_its_deliveries(api, mailbox):
    """With nothing queued, the e-mail sender sleeps until a kick or its next due time (at most
    5 s): it used to read the deliveries (the whole collection on FerretDB) every 100 ms. The
    first test of the module, while nothing of this run is queued or leased."""
    time.sleep(1)
    before = email_scans()
    time.sleep(3)
    assert email_scans() - before <= 2


def test_verification_email_arrives_and_its_token_verifies(api, mailbox):
    t = new_tenant(api, self_registration=True)
    address = f"carol.{secrets.token_hex(4)}@example.test"
    s = register(api, t, email=address)
    m = mailbox.wait(address)[0]
    msg = m["msg"]
    assert m["from"] == "chat@example.test"
    assert msg["Subject"] == "Verify your e-mail address"
    assert str(msg["From"]) == "Chat Écho <chat@example.test>"  # RFC 2047 encoded on the wire
    assert b"=?UTF-8?B?" in m["raw"]
    assert msg["Auto-Submitted"] == "auto-generated" and msg["Message-ID"]
    text = bodies(msg)["text/plain"]
    token = re.search(r"\bev_[0-9a-f]{64}\b", text).group(0)
    assert f"{APP_URL}/verify-email?token={token}" in text
    assert address in text and token in bodies(msg)["text/html"]
    r = api.call("POST", "/v1/auth/verify-email", body={"token": token})
    assert r.status_code == 200 and r.json()["email_verified"] is True, r.text
    assert s["user"]["email_verified"] is False
    time.sleep(1)
    assert len(mailbox.to(address)) == 1  # once per event


def test_password_reset_email_carries_a_working_token(api, mailbox):
    t = new_tenant(api, self_registration=True)
    address = f"erin.{secrets.token_hex(4)}@example.test"
    s = register(api, t, email=address)
    # The address is verified with the mailed token first: a reset by address needs that.
    first = bodies(mailbox.wait(address)[0]["msg"])["text/plain"]
    ev = re.search(r"\bev_[0-9a-f]{64}\b", first).group(0)
    assert api.call("POST", "/v1/auth/verify-email", body={"token": ev}).status_code == 200
    r = api.call("POST", "/v1/auth/password/forgot", body={"tenant_id": t["id"], "email": address})
    assert r.status_code == 202, r.text
    m = mailbox.wait(address, match=lambda m: m["msg"]["Subject"] == "Reset your password")[0]
    token = re.search(r"\bpr_[0-9a-f]{64}\b", bodies(m["msg"])["text/plain"]).group(0)
    r = api.call("POST", "/v1/auth/password/reset", body={"token": token, "new_password": "a brand new passphrase 9"})
    assert r.status_code == 204, r.text
    problem(api.call("GET", "/v1/users/me", s["access_token"]), 401)


# --- notifications by e-mail -----------------------------------------------------------------

def test_a_message_is_mailed_to_who_wants_email_for_its_type(api, mailbox, team):
    tenant, t, addr = team
    want_email(api, t["bob"], ("message", "mention"))
    cid = create(api, t["ann"], "group", ["bob", "cat"], title="trip")["id"]
    mid = ok(send(api, t["ann"], cid, "The train leaves at 9, ok?"))["id"]
    m = mailbox.wait(addr["bob"])[0]
    assert m["msg"]["Subject"] == "New message from ann"
    b = bodies(m["msg"])
    assert "The train leaves at 9, ok?" in b["text/plain"]
    assert f"{APP_URL}/conversations/{cid}" in b["text/plain"]
    assert f'href="{APP_URL}/conversations/{cid}"' in b["text/html"]
    # Every attempt is in the deliveries (beside the pushes), and every decision explained.
    n = notification_of(api, t["bob"], mid)
    d, got = diagnose(api, t["bob"], "bob", mid, lambda g: ("email", "sent") in g)
    assert [x for x in got if x[0] == "email"] == [("email", "queued"), ("email", "sent")]
    deadline = time.time() + 10
    while deliveries(api, t["bob"], n["id"])[0]["state"] != "sent":
        assert time.time() < deadline
        time.sleep(0.1)
    dl = deliveries(api, t["bob"], n["id"])
    assert len(dl) == 1
    assert [(a["attempt"], a["outcome"], a["status"]) for a in dl[0]["attempts"]] == [(1, "sent", 250)]
    # cat did not ask for e-mail (off by default), ann sent it: no mail for them.
    time.sleep(1.0)
    assert mailbox.to(addr["cat"]) == [] and mailbox.to(addr["ann"]) == []
    assert len(mailbox.to(addr["bob"])) == 1


def test_html_bodies_escape_what_users_wrote(api, mailbox, team):
    _, t, addr = team
    want_email(api, t["bob"])
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    ok(send(api, t["ann"], cid, evil))
    b = bodies(mailbox.wait(addr["bob"])[0]["msg"])
    assert "<script>" not in b["text/html"] and "<img" not in b["text/html"]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in b["text/html"]
    assert evil in b["text/plain"]  # plain text stays as written


def test_muted_and_unaddressed_users_get_no_mail_and_it_is_explained(api, mailbox, team):
    tenant, t, addr = team
    for u in ("bob", "cat"):
        want_email(api, t[u])
    ok(api.call("DELETE", "/v1/notifications/contacts/cat", t["root"]), 204)
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    ok(api.call("PATCH", f"/v1/conversations/{cid}/me", t["bob"], {"muted_until": until}))
    deadline = time.time() + 120
    while True:  # the mute reaches this service as member.updated
        mid = ok(send(api, t["ann"], cid, "anyone?"))["id"]
        _, got = diagnose(api, t["bob"], "bob", mid, lambda g: any(c == "email" for c, _ in g))
        if ("email", "muted") in got:
            break
        assert time.time() < deadline, got
    _, cat = diagnose(api, t["cat"], "cat", mid, lambda g: any(c == "email" for c, _ in g))
    assert ("email", "no_address") in cat
    d = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id=cat&message_id={mid}", t["cat"]))
    ex = next(x for x in d["decisions"] if x["channel"] == "email")
    assert "e-mail address" in ex["explanation"]
    assert mailbox.to(addr["cat"]) == []


def test_transient_refusals_are_retried_then_dead_lettered_and_redriven(api, mailbox, team):
    tenant, t, addr = team
    since = int(time.time() * 1000) - 1000
    want_email(api, t["bob"])
    mailbox.fail[addr["bob"]] = "451"
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "knock knock"))["id"]
    n = notification_of(api, t["bob"], mid)
    # One attempt and three retries (0.3 s, 0.6 s, 0.9 s here, +-20 %), then the DLQ.
    deadline = time.time() + 120
    while len(mailbox.attempts_to(addr["bob"])) < 4:
        assert time.time() < deadline
        time.sleep(0.05)
    tries = mailbox.attempts_to(addr["bob"])
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    for gap, want in zip(gaps, (0.3, 0.6, 0.9)):
        assert want * 0.75 <= gap <= want * 1.2 + 1.0, gaps
    _, got = diagnose(api, t["bob"], "bob", mid, lambda g: ("email", "provider_error") in g)
    dl = deliveries(api, t["bob"], n["id"])[0]
    assert dl["state"] == "dead_lettered"
    assert [(a["outcome"], a["status"]) for a in dl["attempts"]] == [("provider_error", 451)] * 4
    time.sleep(1.5)
    assert len(mailbox.attempts_to(addr["bob"])) == 4 and mailbox.to(addr["bob"]) == []
    events = read_events("notifications.dlq", lambda evs: any(e["data"].get("delivery_id") == dl["id"] for e in evs), since)
    ev = next(e for e in events if e["data"].get("delivery_id") == dl["id"])
    validate_event(ev)
    assert ev["type"] == "notification.failed" and ev["data"]["platform"] == "email"
    assert ev["data"]["attempts"] == 4 and ev["_key"] == "bob"
    # The mailbox is back: a tenant_admin redrives it, and the same message arrives once.
    del mailbox.fail[addr["bob"]]
    r = ok(api.call("POST", f"/v1/notifications/deliveries/{dl['id']}/redrive", t["root"]), 202)
    assert [a["outcome"] for a in r["attempts"]][4] == "redriven"
    m = mailbox.wait(addr["bob"])[0]
    assert "knock knock" in bodies(m["msg"])["text/plain"]


def test_a_permanent_refusal_fails_without_retries(api, mailbox, team):
    _, t, addr = team
    want_email(api, t["bob"])
    mailbox.fail[addr["bob"]] = "550"
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    mid = ok(send(api, t["ann"], cid, "hello?"))["id"]
    n = notification_of(api, t["bob"], mid)
    diagnose(api, t["bob"], "bob", mid, lambda g: ("email", "provider_error") in g)
    dl = deliveries(api, t["bob"], n["id"])[0]
    assert dl["state"] == "failed"
    assert [(a["outcome"], a["status"]) for a in dl["attempts"]] == [("provider_error", 550)]
    time.sleep(1.5)
    assert len(mailbox.attempts_to(addr["bob"])) == 1


def test_contacts_are_the_tenant_backends_and_checked(api, mailbox, team):
    tenant, t, addr = team
    c = ok(api.call("PUT", "/v1/notifications/contacts/bob", t["root"],
                    {"email": "bob@example.test", "phone": "+33612345678", "locale": "fr-FR"}))
    assert c == {"user_id": "bob", "email": "bob@example.test", "phone": "+33612345678", "locale": "fr-FR"}
    assert ok(api.call("GET", "/v1/notifications/contacts/bob", t["bob"])) == c  # their own
    problem(api.call("GET", "/v1/notifications/contacts/bob", t["cat"]), 403)
    problem(api.call("PUT", "/v1/notifications/contacts/bob", t["bob"], {"email": "me@evil.test"}), 403, "tenant.manage")
    for body, part in (({"email": "not an address"}, "email"), ({"email": "a@b"}, "email"),
                       ({"email": "x@example.test\r\nBcc: y@example.test"}, "email"),
                       ({"phone": "0612345678"}, "E.164"), ({"phone": "+1234"}, "E.164"),
                       ({"locale": "french!"}, "BCP 47"), ({"email": 5}, "email"), ({"fax": "1"}, "fax")):
        problem(api.call("PUT", "/v1/notifications/contacts/bob", t["root"], body), 400, part)
    assert ok(api.call("GET", "/v1/notifications/contacts/bob", t["root"])) == c  # unchanged
    # A PUT replaces: what is left out is gone.
    c2 = ok(api.call("PUT", "/v1/notifications/contacts/bob", t["root"], {"email": "b2@example.test"}))
    assert c2 == {"user_id": "bob", "email": "b2@example.test", "phone": None, "locale": None}
    # Another tenant's admin sees nothing of it.
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    root2 = token_for(api, other, "root")
    assert ok(api.call("GET", "/v1/notifications/contacts/bob", root2))["email"] is None
    # The preferences take an e-mail switch per type, off by default.
    p = ok(api.call("GET", "/v1/notifications/preferences", t["cat"]))
    assert p["types"]["message"] == {"in_app": True, "push": True, "email": False, "sms": False}
    problem(api.call("PUT", "/v1/notifications/preferences", t["cat"], {"types": {"message": {"email": "yes"}}}), 400, "email")


# --- templates ---------------------------------------------------------------------------------

def test_templates_are_the_tenants_and_checked(api, mailbox, team):
    tenant, t, _ = team
    base = "/v1/notifications/templates"
    d = ok(api.call("GET", f"{base}/message/email/default", t["root"]))
    assert d["source"] == "default" and "{{sender_name}}" in d["subject"] and "{{text}}" in d["html"]
    good = {"subject": "{{sender_name}} te écrit", "text": "{{text}}\n{{link}}", "html": "<p>{{ text }}</p>"}
    problem(api.call("PUT", f"{base}/message/email/fr", t["bob"], good), 403, "tenant.manage")
    for body, part in (({**good, "text": "hi {{nobody}}"}, "nobody"),
                       ({**good, "html": "<p>{{text</p>"}, "unclosed"),
                       ({**good, "subject": "two\nlines"}, "one line"),
                       ({**good, "subject": ""}, "subject"),
                       ({"text": "x"}, "subject"),
                       ({**good, "css": "x"}, "css"),
                       ({**good, "text": 5}, "text")):
        problem(api.call("PUT", f"{base}/message/email/fr", t["root"], body), 400, part)
    problem(api.call("PUT", f"{base}/poke/email/fr", t["root"], good), 404, "poke")
    problem(api.call("PUT", f"{base}/message/pigeon/fr", t["root"], good), 404, "pigeon")
    problem(api.call("PUT", f"{base}/message/email/fr_FR!", t["root"], good), 404, "BCP 47")
    assert ok(api.call("GET", f"{base}/message/email/fr", t["root"]))["source"] == "default"  # unchanged
    put = ok(api.call("PUT", f"{base}/message/email/fr", t["root"], good))
    assert put == {"kind": "message", "channel": "email", "locale": "fr", **good, "source": "tenant"}
    assert ok(api.call("GET", f"{base}/message/email/fr", t["root"])) == put
    # Another tenant still has the default.
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    assert ok(api.call("GET", f"{base}/message/email/fr", token_for(api, other, "root")))["source"] == "default"
    assert api.call("DELETE", f"{base}/message/email/fr", t["root"]).status_code == 204
    problem(api.call("DELETE", f"{base}/message/email/fr", t["root"]), 404)
    assert ok(api.call("GET", f"{base}/message/email/fr", t["root"]))["source"] == "default"


def test_the_users_locale_picks_the_tenants_template(api, mailbox):
    t = new_tenant(api, self_registration=True)
    server(api, t, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    root = token_for(api, t, "root")
    base = "/v1/notifications/templates/verification/email"
    ok(api.call("PUT", f"{base}/fr", root, {
        "subject": "Vérifiez votre adresse", "text": "Votre code : {{token}}",
        "html": "<p>Votre code : <b>{{token}}</b> pour {{email}}</p>"}))
    ok(api.call("PUT", f"{base}/default", root, {"subject": "Confirm {{email}}", "text": "Code {{token}}"}))
    address = f"zoe.{secrets.token_hex(4)}@example.test"
    s = register(api, t, email=address)
    first = mailbox.wait(address)[0]["msg"]
    assert first["Subject"] == f"Confirm {address}"  # no locale known yet: the tenant's default
    assert list(bodies(first)) == ["text/plain"]  # that template has no HTML part
    ok(api.call("PUT", f"/v1/notifications/contacts/{s['user']['id']}", root, {"locale": "fr-CA"}))
    r = api.call("POST", "/v1/auth/verify-email/request", s["access_token"])
    assert r.status_code == 202, r.text
    second = mailbox.wait(address, n=2)[1]["msg"]
    assert second["Subject"] == "Vérifiez votre adresse"  # fr-CA falls back to fr
    b = bodies(second)
    token = re.search(r"ev_[0-9a-f]{64}", b["text/plain"]).group(0)
    assert f"<b>{token}</b> pour {address}" in b["text/html"]
    assert api.call("POST", "/v1/auth/verify-email", body={"token": token}).status_code == 200


# --- digests -------------------------------------------------------------------------------

def is_digest(m):
    return "unread message" in m["msg"]["Subject"]


def test_a_digest_lists_what_is_still_unread_once_per_window(api, mailbox, team):
    tenant, t, addr = team
    for u in ("bob", "cat"):
        ok(api.call("PUT", "/v1/notifications/preferences", t[u], {"email_digest": True}))
    group = create(api, t["ann"], "group", ["bob", "cat"], title="plans")["id"]
    direct = create(api, t["ann"], "direct", ["bob"])["id"]
    m1 = ok(send(api, t["ann"], group, "first <b>bold</b> idea"))
    m2 = ok(send(api, t["ann"], group, "second idea"))
    m3 = ok(send(api, t["ann"], direct, "just for you"))
    # cat reads the group before her window ends: nothing is left for her digest.
    ok(api.call("POST", f"/v1/conversations/{group}/read", t["cat"], {"seq": m2["seq"]}))
    start = time.time()
    d = mailbox.wait(addr["bob"], match=is_digest)[0]
    assert time.time() - start >= 2.5  # not before the window (4 s after the first message)
    assert d["msg"]["Subject"] == "3 unread messages in 2 conversations"
    b = bodies(d["msg"])
    text = b["text/plain"]
    for cid, line in ((group, "ann: first <b>bold</b> idea"), (group, "ann: second idea"),
                      (direct, "ann: just for you")):
        assert line in text and f"{APP_URL}/conversations/{cid}" in text
    assert text.index("first <b>bold</b>") < text.index("second idea")
    assert "ann</b>: first &lt;b&gt;bold&lt;/b&gt; idea" in b["text/html"]
    assert "<b>bold</b>" not in b["text/html"]
    # One digest per window: nothing more for bob, nothing at all for cat.
    time.sleep(6)
    assert len([m for m in mailbox.to(addr["bob"]) if is_digest(m)]) == 1
    assert mailbox.to(addr["cat"]) == []
    # What arrives later opens a new window, whose digest lists only the new message.
    ok(send(api, t["ann"], direct, "one more thing"))
    later = mailbox.wait(addr["bob"], n=2, match=is_digest)[1]
    assert later["msg"]["Subject"] == "1 unread message in 1 conversation"
    assert "one more thing" in bodies(later["msg"])["text/plain"]
    assert "just for you" not in bodies(later["msg"])["text/plain"]
    # Reading the conversation read its notifications in the inbox too.
    items = ok(api.call("GET", "/v1/notifications?limit=100", t["cat"]))["items"]
    assert all(n["read"] for n in items if n.get("message_id") in (m1["id"], m2["id"]))


def test_no_digest_without_asking_or_when_everything_was_read(api, mailbox, team):
    tenant, t, addr = team
    ok(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"email_digest": True}))
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    cid2 = create(api, t["ann"], "direct", ["cat"])["id"]  # cat did not ask for digests
    m = ok(send(api, t["ann"], cid, "read me quickly"))
    ok(send(api, t["ann"], cid2, "cat gets no digest"))
    notification_of(api, t["bob"], m["id"])
    ok(api.call("POST", f"/v1/conversations/{cid}/read", t["bob"], {"seq": m["seq"]}))
    time.sleep(8)  # two windows' worth
    assert mailbox.to(addr["bob"]) == [] and mailbox.to(addr["cat"]) == []
    assert ok(api.call("GET", "/v1/notifications/preferences", t["bob"]))["email_digest"] is True
    problem(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"email_digest": "daily"}), 400, "email_digest")


def test_a_kill_mid_burst_mails_each_message_once(api, mailbox, team, platform):
    """Killed while it works through a burst, the service consumes part of it again: the
    e-mail deliveries are keyed by (event, user, channel), so a replayed event queues no second
    e-mail. (A crash between the SMTP server's 250 and the recorded attempt would send that one
    e-mail again after the lease: at least once, with the same Message-ID.)"""
    _, t, addr = team
    want_email(api, t["bob"])
    cid = create(api, t["ann"], "direct", ["bob"])["id"]
    texts = [f"burst {i} {secrets.token_hex(3)}" for i in range(20)]
    for x in texts:
        ok(send(api, t["ann"], cid, x))
    mailbox.wait(addr["bob"], 3)
    svc = platform["notification"]
    assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
    svc.start()
    mails = mailbox.wait(addr["bob"], len(texts))
    time.sleep(3)  # what a replay would queue again has had time to arrive
    mails = mailbox.to(addr["bob"])
    by_text = {}
    for m in mails:
        body = bodies(m["msg"])["text/plain"]
        x = next(x for x in texts if x in body)
        by_text.setdefault(x, set()).add(m["msg"]["Message-ID"])
    assert set(by_text) == set(texts)
    assert all(len(ids) == 1 for ids in by_text.values()), by_text  # one delivery per message
