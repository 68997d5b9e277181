"""Escalation of priority notifications end to end: a tenant backend's notification marked
"priority" that stays unread is pushed, then e-mailed (real SMTP server, aiosmtpd), then texted
(Twilio-compatible stand-in), each after NOTIFY_ESCALATE_AFTER_S (3 s here); reading it stops
the escalation; an ordinary notification is never escalated."""

import secrets
import time

import pymongo
import pytest

from chat import ok, problem
from conftest import DB_SUFFIX, DBS, MONGO_URI, PORTS, new_tenant, token_for
from push_provider import Provider
from smtp_server import Mailbox, bodies
from sms_provider import SmsProvider
from users_lib import server

AFTER = 3


@pytest.fixture(scope="module")
def providers(platform, tmp_path_factory):
    box = Mailbox(PORTS["notification"] + 2).start()
    sms = SmsProvider(PORTS["notification"] + 3).start()
    push = Provider(PORTS["notification"] + 1, tmp_path_factory.mktemp("push")).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    svc.env["NOTIFY_GROUP"] = f"e2e-notification-{DB_SUFFIX}-esc"  # see test_notification_email
    svc.env.update(sms.env())
    svc.env.update(push.env())
    svc.env.update({"SMTP_URL": box.url, "SMTP_FROM": "chat@example.test",
                    "NOTIFY_ESCALATE_AFTER_S": str(AFTER), "SMS_RECIPIENT_PER_HOUR": "5"})
    svc.start()
    yield box, sms, push
    box.stop()
    sms.stop()
    push.stop()


@pytest.fixture
def team(api):
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/backend", {"roles": ["tenant_admin"]})
    t = {u: token_for(api, tenant, u) for u in ("bob", "cat", "backend")}
    tag = secrets.token_hex(4)
    contact = {u: {"email": f"{u}.{tag}@example.test", "phone": "+1555" + str(secrets.randbelow(10**7)).zfill(7)}
               for u in ("bob", "cat")}
    for u, c in contact.items():
        ok(api.call("PUT", f"/v1/notifications/contacts/{u}", t["backend"], c))
    return tenant, t, contact


def notify(api, t, users, priority=None, title="Server down"):
    body = {"user_ids": users, "title": title, "body": "db-1 stopped answering"}
    if priority is not None:
        body["priority"] = priority
    return ok(api.call("POST", "/v1/notifications", t["backend"], body), 202)


def inbox_item(api, token, title, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        for n in ok(api.call("GET", "/v1/notifications?limit=100", token))["items"]:
            if n.get("title") == title:
                return n
        assert time.time() < deadline
        time.sleep(0.1)


def escalations(tenant, user):
    db = pymongo.MongoClient(MONGO_URI)[DBS["notification"]]
    return list(db.decisions.find({"tenant": tenant["id"], "user_id": user, "channel": "escalation"}))


def test_unread_priority_goes_push_then_email_then_sms(api, providers, team):
    box, sms, push = providers
    tenant, t, contact = team
    tok = "fcm-" + secrets.token_hex(16)
    ok(api.call("POST", "/v1/devices", t["bob"], {"platform": "fcm", "token": tok}), 201)
    title = "Server down " + secrets.token_hex(3)
    notify(api, t, ["bob"], priority=True, title=title)
    n = inbox_item(api, t["bob"], title)
    pushed = push.wait_sends(tok, 1, timeout=60)[0]
    assert pushed["body"]["message"]["notification"]["title"] == title
    mail = box.wait(contact["bob"]["email"])[0]
    assert mail["at"] - pushed["at"] >= AFTER - 0.5  # not before the window
    assert mail["msg"]["Subject"] == title and "db-1 stopped answering" in bodies(mail["msg"])["text/plain"]
    text = sms.wait(contact["bob"]["phone"])[0]
    assert text["at"] - mail["at"] >= AFTER - 0.5
    assert text["body"] == f"{title}: db-1 stopped answering"
    steps = [d["decision"] for d in sorted(escalations(tenant, "bob"), key=lambda d: d["_id"])]
    assert steps == ["scheduled", "escalated_email", "escalated_sms"]
    # The e-mail and the SMS are deliveries of the notification, beside the push.
    deadline = time.time() + 20
    while True:
        dl = ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", t["bob"]))["items"]
        if sorted((d["platform"], d["state"]) for d in dl) == [("email", "sent"), ("fcm", "sent"), ("sms", "sent")]:
            break
        assert time.time() < deadline, dl
        time.sleep(0.2)
    time.sleep(AFTER + 1)
    assert len(box.to(contact["bob"]["email"])) == 1 and len(sms.to(contact["bob"]["phone"])) == 1


def test_reading_it_stops_the_escalation(api, providers, team):
    box, sms, _ = providers
    tenant, t, contact = team
    title = "Read me " + secrets.token_hex(3)
    notify(api, t, ["bob", "cat"], priority=True, title=title)
    n = inbox_item(api, t["bob"], title)
    ok(api.call("POST", f"/v1/notifications/{n['id']}/read", t["bob"]))
    # cat reads hers only after the e-mail: she gets the e-mail, not the SMS.
    box.wait(contact["cat"]["email"])
    ok(api.call("POST", "/v1/notifications/read_all", t["cat"]))
    time.sleep(2 * AFTER + 2)
    assert box.to(contact["bob"]["email"]) == [] and sms.to(contact["bob"]["phone"]) == []
    assert sms.to(contact["cat"]["phone"]) == []
    assert [d["decision"] for d in escalations(tenant, "bob")] == ["scheduled", "acknowledged"]
    assert [d["decision"] for d in sorted(escalations(tenant, "cat"), key=lambda d: d["_id"])] == \
        ["scheduled", "escalated_email", "acknowledged"]


def test_ordinary_notifications_are_not_escalated_and_priority_is_checked(api, providers, team):
    box, sms, _ = providers
    tenant, t, contact = team
    problem(api.call("POST", "/v1/notifications", t["backend"],
                     {"user_ids": ["bob"], "title": "x", "body": "y", "priority": "high"}), 400, "priority")
    title = "FYI " + secrets.token_hex(3)
    notify(api, t, ["bob"], title=title)
    inbox_item(api, t["bob"], title)
    time.sleep(2 * AFTER + 2)
    assert box.to(contact["bob"]["email"]) == [] and sms.to(contact["bob"]["phone"]) == []
    assert escalations(tenant, "bob") == []
