"""E-mail delivery reports as Amazon SES sends them through Amazon SNS (a local stand-in on
base+27 that serves its own signing certificate and signs like SNS): the subscription is
confirmed; Delivery, Bounce and Complaint notifications move the e-mail delivery the mail
was sent as (its Message-ID) through the same rule as the status endpoint, show in the
deliveries and the diagnostics, and are idempotent; messages that are forged, signed by
another key, from a certificate host or topic not allowed, change nothing."""

import secrets
import time

import pytest
import requests

from chat import create, ok, problem, send, validate_event
from conftest import DB_SUFFIX, GATEWAY, PORTS, new_tenant, read_events, token_for
from smtp_server import Mailbox
from sns_ses import TOPIC, SnsSes, rsa_cert
from users_lib import server

URL = f"{GATEWAY}/v1/callbacks/ses"


@pytest.fixture(scope="module")
def ses(platform):
    box = Mailbox(PORTS["notification"] + 2).start()
    sns = SnsSes(PORTS["notification"] + 7).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env["NOTIFY_GROUP"] = f"e2e-notification-{DB_SUFFIX}-ses"
    svc.env.update({"SMTP_URL": box.url, "SMTP_FROM": "chat@example.test"})
    svc.env.update(sns.env())
    svc.start()
    yield box, sns
    box.stop()
    sns.stop()


@pytest.fixture
def team(api):
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    t = {u: token_for(api, tenant, u) for u in ("ann", "bob", "cat", "root")}
    tag = secrets.token_hex(4)
    addr = {u: f"{u}.{tag}@example.test" for u in ("bob", "cat")}
    for u, a in addr.items():
        ok(api.call("PUT", f"/v1/notifications/contacts/{u}", t["root"], {"email": a}))
        ok(api.call("PUT", "/v1/notifications/preferences", t[u], {"types": {"message": {"email": True}}}))
    return tenant, t, addr


def email_delivery(api, t, user, mid, state=None, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        items = ok(api.call("GET", "/v1/notifications?limit=100", t[user]))["items"]
        n = next((x for x in items if x.get("message_id") == mid), None)
        if n:
            dl = [d for d in ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["root"]))["items"]
                  if d["platform"] == "email"]
            if dl and (state is None or dl[0]["state"] == state):
                return dl[0]
        assert time.time() < deadline, n
        time.sleep(0.1)


def mailed(api, box, t, addr, users, text):
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    mid = ok(send(api, t["ann"], cid, text))["id"]
    ids = {u: box.wait(addr[u])[0]["msg"]["Message-ID"] for u in users}
    return mid, ids


def test_the_subscription_is_confirmed(ses):
    _, sns = ses
    m = sns.subscription()
    r = sns.post(URL, m)
    assert r.status_code == 204, r.text
    assert [c["token"] for c in sns.matching(lambda c: c["kind"] == "confirm")][-1] == m["Token"]


def test_ses_delivery_bounce_and_complaint_reach_the_delivery(api, ses, team):
    box, sns = ses
    tenant, t, addr = team
    since = int(time.time() * 1000) - 1000
    mid, ids = mailed(api, box, t, addr, ("bob", "cat"), "see you at 8")
    bob = email_delivery(api, t, "bob", mid, "sent")
    assert ids["bob"] == f"<{bob['id']}@notification.chat>"  # what SES reports it as
    # Delivery (SignatureVersion 1), then a late bounce of the same mail (version 2).
    r = sns.post(URL, sns.ses("Delivery", ids["bob"], addr["bob"]))
    assert r.status_code == 204, r.text
    d = email_delivery(api, t, "bob", mid, "delivered")
    assert d["attempts"][-1]["detail"] == "delivered (Amazon SES): 250 2.6.0 Message received"
    assert sns.post(URL, sns.ses("Delivery", ids["bob"], addr["bob"])).status_code == 204  # SNS retries
    assert len(email_delivery(api, t, "bob", mid, "delivered")["attempts"]) == 2
    assert sns.post(URL, sns.ses("Bounce", ids["bob"], addr["bob"], version="2")).status_code == 204
    b = email_delivery(api, t, "bob", mid, "bounced")
    assert [a["outcome"] for a in b["attempts"]] == ["sent", "delivered", "bounced"]
    assert b["attempts"][-1]["detail"] == "bounce Permanent/General (Amazon SES): smtp; 550 5.1.1 user unknown"
    # A delivered report after the bounce is a conflict, and changes nothing.
    problem(sns.post(URL, sns.ses("Delivery", ids["bob"], addr["bob"])), 409, "bounced")
    # A complaint says it reached the mailbox.
    email_delivery(api, t, "cat", mid, "sent")
    assert sns.post(URL, sns.ses("Complaint", ids["cat"], addr["cat"], version="2")).status_code == 204
    c = email_delivery(api, t, "cat", mid, "delivered")
    assert c["attempts"][-1]["detail"] == "delivered, then a complaint (Amazon SES): abuse"
    diag = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id=bob&message_id={mid}", t["root"]))
    got = [(x["channel"], x["decision"]) for x in diag["decisions"]]
    assert ("email", "delivered") in got and ("email", "bounced") in got, got
    # A mail nobody sent.
    problem(sns.post(URL, sns.ses("Bounce", "<no-such@notification.chat>", addr["bob"])), 404)
    events = read_events("notifications", lambda evs: sum(1 for e in evs if e["type"] == "notification.delivered"
                                                          and e["data"]["delivery_id"] in (bob["id"], c["id"])) >= 3, since)
    mine = sorted((e["data"]["user_id"], e["data"]["state"]) for e in events
                  if e["type"] == "notification.delivered" and e["data"]["delivery_id"] in (bob["id"], c["id"]))
    assert mine == [("bob", "bounced"), ("bob", "delivered"), ("cat", "delivered")]
    for e in events:
        if e["type"] == "notification.delivered" and e["data"]["delivery_id"] == bob["id"]:
            validate_event(e)
            assert e["data"]["channel"] == "email" and e["tenant"] == tenant["id"]


def test_forged_sns_messages_change_nothing(api, ses, team):
    box, sns = ses
    _, t, addr = team
    mid, ids = mailed(api, box, t, addr, ("bob",), "hello")
    email_delivery(api, t, "bob", mid, "sent")
    other_key, _ = rsa_cert()
    # Signed by a key that is not the certificate's.
    problem(sns.post(URL, sns.sign(sns.ses("Bounce", ids["bob"], addr["bob"]), key=other_key)), 403, "signature")
    # Tampered with after signing: another message id in the SES event.
    m = sns.ses("Delivery", "<x@y>", addr["bob"])
    m["Message"] = m["Message"].replace("<x@y>", ids["bob"])
    problem(sns.post(URL, m), 403, "signature")
    # A certificate from a host not allowed (never fetched), and a topic not accepted.
    m = sns.ses("Bounce", ids["bob"], addr["bob"])
    m["SigningCertURL"] = "http://127.0.0.2:9/cert.pem"
    problem(sns.post(URL, sns.sign(m)), 403, "SNS_CERT_HOSTS")
    m = sns.message("Notification", TopicArn=TOPIC + "-other", Message="{}")
    problem(sns.post(URL, sns.sign(m)), 403, "SNS_TOPIC_ARNS")
    # Unknown SignatureVersion, and a body that is not an SNS message.
    m = sns.ses("Bounce", ids["bob"], addr["bob"])
    m["SignatureVersion"] = "3"
    problem(sns.post(URL, m), 403, "SignatureVersion")
    problem(requests.post(URL, data=b'{"Type": "Notification"}', headers={"Content-Type": "text/plain"}), 400, "TopicArn")
    time.sleep(0.3)
    d = email_delivery(api, t, "bob", mid, "sent")
    assert [a["outcome"] for a in d["attempts"]] == ["sent"]
