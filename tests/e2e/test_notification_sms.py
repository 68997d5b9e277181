"""SMS notifications end to end through a Twilio-compatible API (a local stand-in on base+23
that checks Basic auth and the form, records, and fails on demand): a message reaches the
phone of a user who wants SMS for its type; 5xx answers are retried then dead-lettered, 4xx
ones fail at once; the per-number and per-tenant hourly budgets (SMS pumping protection)
stop what is over them, and the diagnostics say so. The stand-in reports delivery back like
Twilio (a signed StatusCallback through the gateway): delivered and undelivered reach the
delivery, its diagnostics and the notifications topic (notification.delivered); a report
with a bad signature is refused and changes nothing."""

import secrets
import time

import requests

import pytest

from chat import create, ok, problem, send, validate_event
from conftest import DB_SUFFIX, GATEWAY, PORTS, new_tenant, read_events, token_for
from sms_provider import FROM, TOKEN, SmsProvider, twilio_signature
from users_lib import server


@pytest.fixture(scope="module")
def sms(platform):
    """The SMS API, and the notification service restarted to use it with budgets of 3 SMS
    per number and 5 per tenant an hour and short retry delays."""
    prov = SmsProvider(PORTS["notification"] + 3).start()
    svc = platform["notification"]
    assert svc.stop() == 0
    # A fresh consumer group starts at the latest offset (see test_notification_email).
    svc.env["NOTIFY_GROUP"] = f"e2e-notification-{DB_SUFFIX}-sms"
    svc.env.update(prov.env())
    # Twilio reports delivery to the public API (the gateway), which relays /v1/callbacks.
    svc.env["SMS_STATUS_CALLBACK_BASE_URL"] = GATEWAY
    svc.env.update({"SMS_RECIPIENT_PER_HOUR": "3", "SMS_TENANT_PER_HOUR": "5",
                    "PUSH_RETRY_DELAYS_MS": "300,600,900"})
    svc.start()
    yield prov
    prov.stop()


def phone():
    return "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))


@pytest.fixture
def team(api):
    tenant = new_tenant(api)
    server(api, tenant, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    t = {u: token_for(api, tenant, u) for u in ("ann", "bob", "cat", "root")}
    num = {u: phone() for u in ("ann", "bob", "cat")}
    for u, n in num.items():
        ok(api.call("PUT", f"/v1/notifications/contacts/{u}", t["root"], {"phone": n}))
    return tenant, t, num


def want_sms(api, token, types=("message",)):
    ok(api.call("PUT", "/v1/notifications/preferences", token, {"types": {ty: {"sms": True} for ty in types}}))


def decisions(api, token, user, mid, until, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        d = ok(api.call("GET", f"/v1/notifications/diagnostics?user_id={user}&message_id={mid}", token))
        got = [x for x in d["decisions"] if x["channel"] == "sms"]
        if until([x["decision"] for x in got]):
            return got
        assert time.time() < deadline, d
        time.sleep(0.1)


def sms_deliveries(api, token, user_token, mid, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        items = ok(api.call("GET", "/v1/notifications?limit=100", user_token))["items"]
        n = next((x for x in items if x.get("message_id") == mid), None)
        if n:
            return [d for d in ok(api.call("GET", f"/v1/notifications/{n['id']}/deliveries", token))["items"]
                    if d["platform"] == "sms"]
        assert time.time() < deadline
        time.sleep(0.1)


def test_a_message_is_texted_to_who_wants_sms(api, sms, team):
    _, t, num = team
    want_sms(api, t["bob"])
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    mid = ok(send(api, t["ann"], cid, "Meet at 6 & bring 2€"))["id"]
    got = sms.wait(num["bob"])
    assert len(got) == 1 and got[0]["from"] == FROM
    assert got[0]["body"] == "ann: Meet at 6 & bring 2€"  # form-encoded, UTF-8, decoded intact
    assert [x["decision"] for x in decisions(api, t["bob"], "bob", mid, lambda g: "sent" in g)][:2] == ["queued", "sent"]
    dl = sms_deliveries(api, t["root"], t["bob"], mid)
    assert len(dl) == 1 and dl[0]["state"] in ("sent", "delivered")
    first = dl[0]["attempts"][0]  # a delivery report may follow it (test_twilio_status_callbacks...)
    assert (first["attempt"], first["outcome"], first["status"]) == (1, "sent", 201)
    time.sleep(1)
    assert sms.to(num["cat"]) == []  # off by default


def test_provider_errors_are_retried_then_dead_lettered_and_refusals_fail(api, sms, team):
    _, t, num = team
    since = int(time.time() * 1000) - 1000
    for u in ("bob", "cat"):
        want_sms(api, t[u])
    sms.fail[num["bob"]] = "500"
    sms.fail[num["cat"]] = "400"
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    mid = ok(send(api, t["ann"], cid, "ping"))["id"]
    tries = sms.wait(num["bob"], 4)
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    for gap, want in zip(gaps, (0.3, 0.6, 0.9)):
        assert want * 0.75 <= gap <= want * 1.2 + 1.0, gaps
    decisions(api, t["bob"], "bob", mid, lambda g: "provider_error" in g)
    dl = sms_deliveries(api, t["root"], t["bob"], mid)[0]
    assert dl["state"] == "dead_lettered" and [a["status"] for a in dl["attempts"]] == [500] * 4
    events = read_events("notifications.dlq", lambda evs: any(e["data"].get("delivery_id") == dl["id"] for e in evs), since)
    ev = next(e for e in events if e["data"].get("delivery_id") == dl["id"])
    validate_event(ev)
    assert ev["data"]["platform"] == "sms" and ev["data"]["attempts"] == 4
    decisions(api, t["cat"], "cat", mid, lambda g: "provider_error" in g)
    cat = sms_deliveries(api, t["root"], t["cat"], mid)[0]
    assert cat["state"] == "failed" and [a["status"] for a in cat["attempts"]] == [400]
    assert "21211" in cat["attempts"][0]["detail"]
    time.sleep(1.5)
    assert len(sms.to(num["bob"])) == 4 and len(sms.to(num["cat"])) == 1


def test_hourly_budgets_per_number_and_per_tenant_stop_sms_pumping(api, sms, team):
    _, t, num = team
    for u in ("bob", "cat"):
        want_sms(api, t[u])
    bob_conv = create(api, t["ann"], "direct", ["bob"])["id"]
    cat_conv = create(api, t["ann"], "direct", ["cat"])["id"]
    bob = [ok(send(api, t["ann"], bob_conv, f"b{i}"))["id"] for i in range(4)]
    last = decisions(api, t["bob"], "bob", bob[3], lambda g: g != [])
    assert [x["decision"] for x in last] == ["rate_limited"]
    assert "recipient limit" in last[0]["detail"] and "SMS_RECIPIENT_PER_HOUR" in last[0]["detail"]
    assert "budget" in last[0]["explanation"]
    sms.wait(num["bob"], 3)
    # bob's numbers used 3 of the tenant's 5; cat gets 2, then the tenant's budget is spent.
    cat = [ok(send(api, t["ann"], cat_conv, f"c{i}"))["id"] for i in range(3)]
    over = decisions(api, t["cat"], "cat", cat[2], lambda g: g != [])
    assert [x["decision"] for x in over] == ["rate_limited"] and "tenant limit" in over[0]["detail"]
    sms.wait(num["cat"], 2)
    time.sleep(1.5)
    assert len(sms.to(num["bob"])) == 3 and len(sms.to(num["cat"])) == 2
    # Another tenant has its own budget.
    other = new_tenant(api)
    server(api, other, "PUT", "/v1/server/users/root", {"roles": ["tenant_admin"]})
    o = {u: token_for(api, other, u) for u in ("ann", "bob", "root")}
    n2 = phone()
    ok(api.call("PUT", "/v1/notifications/contacts/bob", o["root"], {"phone": n2}))
    want_sms(api, o["bob"])
    ok(send(api, o["ann"], create(api, o["ann"], "direct", ["bob"])["id"], "other tenant"))
    assert sms.wait(n2)[0]["body"] == "ann: other tenant"


def test_sms_templates_and_preferences_are_checked(api, sms, team):
    _, t, num = team
    base = "/v1/notifications/templates/message/sms"
    assert ok(api.call("GET", f"{base}/default", t["root"]))["text"] == "{{sender_name}}: {{text}}"
    problem(api.call("PUT", f"{base}/default", t["root"], {"text": "x", "subject": "no"}), 400, "subject")
    problem(api.call("PUT", f"{base}/default", t["root"], {"text": "{{sms_code}}"}), 400, "sms_code")
    problem(api.call("PUT", f"{base}/default", t["root"], {"text": "x" * 1601}), 400, "1600")
    ok(api.call("PUT", f"{base}/default", t["root"], {"text": "[Chat] {{sender_name}} says {{text}}"}))
    want_sms(api, t["bob"])
    p = ok(api.call("GET", "/v1/notifications/preferences", t["bob"]))
    assert p["types"]["message"]["sms"] is True and p["types"]["mention"]["sms"] is False
    problem(api.call("PUT", "/v1/notifications/preferences", t["bob"], {"types": {"message": {"sms": 1}}}), 400, "sms")
    ok(send(api, t["ann"], create(api, t["ann"], "direct", ["bob"])["id"], "hi"))
    assert sms.wait(num["bob"])[0]["body"] == "[Chat] ann says hi"


def sms_delivery_in(api, token, user_token, mid, state, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        dl = sms_deliveries(api, token, user_token, mid)
        if dl and dl[0]["state"] == state:
            return dl[0]
        assert time.time() < deadline, dl
        time.sleep(0.1)


def test_twilio_status_callbacks_report_delivery(api, sms, team):
    tenant, t, num = team
    tenant = tenant["id"]
    since = int(time.time() * 1000) - 1000
    for u in ("bob", "cat"):
        want_sms(api, t[u])
    sms.outcome[num["cat"]] = ("undelivered", "30003")  # Twilio: unreachable handset
    cid = create(api, t["ann"], "group", ["bob", "cat"])["id"]
    mid = ok(send(api, t["ann"], cid, "did it arrive?"))["id"]
    bob_sms = sms.wait(num["bob"])[0]
    # The send asked for the tenant's callback on the public API.
    assert bob_sms["callback"] == f"{GATEWAY}/v1/callbacks/twilio/{tenant}"
    bob = sms_delivery_in(api, t["root"], t["bob"], mid, "delivered")
    assert [(a["attempt"], a["outcome"]) for a in bob["attempts"]] == [(1, "sent"), (1, "delivered")]
    assert bob["attempts"][1]["detail"] == "delivered (Twilio status callback)"
    assert {r["answer"] for r in sms.reports(bob_sms["sid"])} == {204}
    cat = sms_delivery_in(api, t["root"], t["cat"], mid, "bounced")
    assert cat["attempts"][-1]["outcome"] == "bounced" and "30003" in cat["attempts"][-1]["detail"]
    got = [x["decision"] for x in decisions(api, t["root"], "bob", mid, lambda g: "delivered" in g)]
    assert got == ["queued", "sent", "delivered"]
    assert "bounced" in [x["decision"] for x in decisions(api, t["root"], "cat", mid, lambda g: "bounced" in g)]
    # Twilio repeats a report: nothing changes.
    url = bob_sms["callback"]
    params = {"AccountSid": sms_sid(), "MessageSid": bob_sms["sid"], "MessageStatus": "delivered", "To": num["bob"]}
    r = requests.post(url, data=params, headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, params)})
    assert r.status_code == 204, r.text
    assert len(sms_delivery_in(api, t["root"], t["bob"], mid, "delivered")["attempts"]) == 2
    # One event per delivery and state on the notifications topic, validated by its schema.
    want = {(bob["id"], "delivered"), (cat["id"], "bounced")}
    events = read_events("notifications", lambda evs: want <= {(e["data"].get("delivery_id"), e["data"].get("state"))
                                                              for e in evs if e["type"] == "notification.delivered"}, since)
    mine = [e for e in events if e["type"] == "notification.delivered" and e["data"]["delivery_id"] in (bob["id"], cat["id"])]
    for e in mine:
        validate_event(e)
        assert e["tenant"] == tenant and e["data"]["channel"] == "sms" and e["data"]["message_id"] == mid
    assert sorted((e["data"]["user_id"], e["data"]["state"], e["_key"]) for e in mine) == \
        [("bob", "delivered", "bob"), ("cat", "bounced", "cat")]
    assert len({e["id"] for e in mine}) == 2


def sms_sid():
    return "AC" + "e2e0" * 8


def test_a_forged_twilio_callback_is_refused_and_changes_nothing(api, sms, team):
    _, t, num = team
    want_sms(api, t["bob"])
    sms.outcome[num["bob"]] = None  # no report: the delivery stays sent
    mid = ok(send(api, t["ann"], create(api, t["ann"], "direct", ["bob"])["id"], "hello"))["id"]
    bob_sms = sms.wait(num["bob"])[0]
    sms_delivery_in(api, t["root"], t["bob"], mid, "sent")
    url = bob_sms["callback"]
    params = {"AccountSid": sms_sid(), "MessageSid": bob_sms["sid"], "MessageStatus": "undelivered",
              "ErrorCode": "30003", "To": num["bob"]}
    good = twilio_signature(TOKEN, url, params)
    forged = [
        {"X-Twilio-Signature": twilio_signature("not-the-token", url, params)},  # wrong key
        {"X-Twilio-Signature": twilio_signature(TOKEN, url + "x", params)},      # another URL
        {"X-Twilio-Signature": good[:-2] + ("AA" if good[-2:] != "AA" else "BB")},
        {},                                                                      # unsigned
    ]
    for h in forged:
        problem(requests.post(url, data=params, headers=h), 403, "X-Twilio-Signature")
    # Signed for these params, sent with another status: the signature covers the body.
    problem(requests.post(url, data={**params, "MessageStatus": "failed"}, headers={"X-Twilio-Signature": good}), 403)
    # Another tenant's callback URL, correctly signed for it: the sid is not that tenant's.
    other = new_tenant(api)
    ourl = f"{GATEWAY}/v1/callbacks/twilio/{other['id']}"
    problem(requests.post(ourl, data=params, headers={"X-Twilio-Signature": twilio_signature(TOKEN, ourl, params)}), 404)
    # Malformed, but signed: 4xx problem, nothing changes.
    problem(requests.post(url, data="MessageSid=%zz", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                               "X-Twilio-Signature": good}), 400, "escape")
    problem(requests.post(url, json=params, headers={"X-Twilio-Signature": good}), 415)
    time.sleep(0.5)
    dl = sms_delivery_in(api, t["root"], t["bob"], mid, "sent")
    assert [a["outcome"] for a in dl["attempts"]] == ["sent"]
    # The genuine report is taken.
    assert requests.post(url, data=params, headers={"X-Twilio-Signature": good}).status_code == 204
    assert "30003" in sms_delivery_in(api, t["root"], t["bob"], mid, "bounced")["attempts"][-1]["detail"]
