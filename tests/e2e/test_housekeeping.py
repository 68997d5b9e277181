"""Analytics and housekeeping: GET .../stats computed from the stored messages, auto-archive of
inactive conversations and message retention, both idempotent and safe when several run at
once. Time is moved by backdating stored documents, the jobs run through the messaging
service's internal endpoint."""

import datetime as dt
import socket as pysocket
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from chat import SyncClient, all_pages, configured, create, ok, problem, send
from conftest import INTERNAL_HEADERS, PORTS, extra_service, new_tenant, read_events, token_for

DAY = 86400000


def users(api, tenant, *names):
    return {n: token_for(api, tenant, n) for n in names}


def iso(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run_jobs():
    r = requests.post(f"http://127.0.0.1:{PORTS['messaging']}/internal/v1/messaging/jobs/run", headers=INTERNAL_HEADERS,
                      timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def backdate_log(mongo, cid, last_eseq, when):
    """Moves the conversation's log entries up to `last_eseq` back to `when`. First waits for the
    outbox to mark them published: FerretDB 1.x applies an update as read, change, write back,
    with no transaction (deploy/README.md), so the outbox's mark, which comes when Kafka
    acknowledges (late under load), could undo a backdating that went in between."""
    f = {"conversation_id": cid, "eseq": {"$lte": last_eseq}}
    deadline = time.time() + 30
    while mongo.events.count_documents({**f, "published": False}) and time.time() < deadline:
        time.sleep(0.1)
    mongo.events.update_many(f, {"$set": {"created_at": when}})
    assert mongo.events.count_documents({**f, "created_at": {"$gt": when}}) == 0


def test_stats_from_the_stored_messages(api, tenant, mongo):
    t = users(api, tenant, "sa", "sb", "sc")
    cid = create(api, t["sa"], "group", ["sb", "sc"])["id"]
    # Three days of history, written as the service writes messages (backdated).
    base = (int(time.time() * 1000) // DAY - 3) * DAY
    plan = [(0, 9, "sa"), (0, 9.5, "sb"), (0, 10, "sb"), (1, 14, "sc"), (1, 14.25, "sa"), (1, 14.3, "sa"),
            (2, 9, "sb"), (2, 9.1, "sa")]
    docs = []
    for i, (day, hour, who) in enumerate(plan):
        at = base + day * DAY + int(hour * 3600000)
        docs.append({"_id": str(uuid.uuid4()), "tenant": tenant["id"], "conversation_id": cid, "seq": 100 + i,
                     "sender_id": who, "type": "text", "text": f"h{i}", "client_msg_id": f"h{i}",
                     "created_at": dt.datetime.fromtimestamp(at / 1000, dt.timezone.utc)})
    mongo.messages.insert_many(docs)
    ok(send(api, t["sa"], cid, "today"))
    r = ok(api.call("GET", f"/v1/conversations/{cid}/stats?from={iso(base)}&to={iso(base + 3 * DAY)}&bucket=day", t["sc"]), 200)
    assert r["messages"] == 8 and [b["messages"] for b in r["volume"]] == [3, 3, 2]
    assert r["volume"][0]["start"] == iso(base) and r["active_members"] == 3
    times = [base + d * DAY + int(h * 3600000) for d, h, _ in plan]
    gaps = [times[i] - times[i - 1] for i in range(1, len(plan)) if plan[i][2] != plan[i - 1][2]]
    assert r["median_first_response_s"] == statistics.median(gaps) / 1000
    assert r["busiest_hours"] == [9] and r["messages_by_hour"][9] == 4 and r["messages_by_hour"][14] == 3
    hourly = ok(api.call("GET", f"/v1/conversations/{cid}/stats?from={iso(base)}&to={iso(base + DAY)}&bucket=hour", t["sa"]), 200)
    assert len(hourly["volume"]) == 24 and [b["messages"] for b in hourly["volume"]][9:11] == [2, 1]
    default = ok(api.call("GET", f"/v1/conversations/{cid}/stats", t["sa"]), 200)  # the last 7 days
    assert default["messages"] == 9
    for q, detail in [("?bucket=week", "day or hour"), ("?from=yesterday", "RFC 3339"),
                      (f"?from={iso(base)}&to={iso(base + 40 * DAY)}&bucket=hour", "31 days")]:
        problem(api.call("GET", f"/v1/conversations/{cid}/stats{q}", t["sa"]), 400, detail)
    problem(api.call("GET", f"/v1/conversations/{cid}/stats", token_for(api, tenant, "outsider")), 404)


def test_auto_archive_is_idempotent_and_safe_in_parallel(api, tenant, platform, mongo):
    t = users(api, tenant, "aa", "ab")
    t0 = int(time.time() * 1000) - 1000
    with configured(platform, AUTO_ARCHIVE_DAYS=1, JOBS_EVERY_S=3600):
        run_jobs()  # whatever earlier tests left behind
        old = [create(api, t["aa"], "group", ["ab"], title=f"old {i}")["id"] for i in range(6)]
        fresh = create(api, t["aa"], "group", ["ab"], title="fresh")["id"]
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
        mongo.conversations.update_many({"_id": {"$in": old}}, {"$set": {"last_activity_at": past}})
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: run_jobs(), range(4)))
        assert sum(r["archived"] for r in runs) == 6, runs  # each archived once, whoever ran
        assert run_jobs()["archived"] == 0
        listed = [c["id"] for c in all_pages(api, t["ab"], "/v1/conversations")]
        assert fresh in listed and not set(old) & set(listed)
        archived = all_pages(api, t["ab"], "/v1/conversations", "?archived=true")
        assert {c["id"] for c in archived} >= set(old) and all(c.get("auto_archived") for c in archived if c["id"] in old)
        ok(send(api, t["ab"], old[0], "anyone here?"))  # activity brings it back
        assert old[0] in [c["id"] for c in all_pages(api, t["ab"], "/v1/conversations")]
    evs = read_events("conversations", lambda evs: len([e for e in evs if e["subject"] in old and e["type"] == "conversation.updated"]) >= 7, t0)
    changes = [e for e in evs if e["subject"] in old and e["type"] == "conversation.updated"]
    assert sorted(e["data"].get("auto_archived", False) for e in changes) == [False] + [True] * 6


def test_retention_deletes_old_messages_and_sync_resets(api, tenant, platform, mongo):
    t = users(api, tenant, "ra", "rb")
    cid = create(api, t["ra"], "group", ["rb"])["id"]
    b = SyncClient(api, t["rb"], "rb")
    b.sync()
    sent = [ok(send(api, t["ra"], cid, f"m{k}")) for k in range(5)]
    old_ids = [m["id"] for m in sent[:3]]
    ok(api.call("POST", f"/v1/conversations/{cid}/messages/{old_ids[0]}/reactions", t["rb"], {"emoji": "👍"}))
    ok(api.call("PATCH", f"/v1/conversations/{cid}/messages/{old_ids[1]}", t["ra"], {"text": "m1!"}), 200)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    # Three days pass for the first three messages and everything logged up to them.
    third = mongo.events.find_one({"_id": old_ids[2]})["eseq"]
    mongo.messages.update_many({"_id": {"$in": old_ids}}, {"$set": {"created_at": past}})
    mongo.message_versions.update_many({"message_id": {"$in": old_ids}}, {"$set": {"message_at": past}})
    mongo.reactions.update_many({"message_id": {"$in": old_ids}}, {"$set": {"created_at": past}})
    backdate_log(mongo, cid, third, past)
    with configured(platform, RETENTION_DAYS=2, AUTO_ARCHIVE_DAYS=0):
        # The restarted service's own pass may come first and hold the job's lease (a run then
        # reports 0): what counts is the result, reached within a few passes.
        deadline = time.time() + 20
        while True:
            deleted = run_jobs()["deleted"]
            left = [m["text"] for m in all_pages(api, t["rb"], f"/v1/conversations/{cid}/messages")]
            if left == ["m3", "m4"] or time.time() > deadline:
                break
            time.sleep(0.5)
        assert left == ["m3", "m4"], (left, deleted)
        assert run_jobs()["deleted"] == 0  # idempotent
    assert mongo.message_versions.count_documents({"message_id": {"$in": old_ids}}) == 0
    assert mongo.reactions.count_documents({"message_id": {"$in": old_ids}}) == 0
    assert mongo.conversations.find_one({"_id": cid})["log_floor"] == third + 1
    items = b.sync()  # the cursor is behind the floor: an explicit reset
    assert [(i["type"], i.get("reason")) for i in items] == [("reset", "history_expired")]
    assert [m["text"] for m in b.convs[cid]["messages"].values()] == ["m3", "m4"]


def test_retention_follows_each_tenants_own_setting(api, mongo):
    """retention_days is a tenant setting: a tenant with 1 day loses its 3-day-old messages,
    another tenant (0: keep) on the same platform keeps the same history."""
    from conftest import ADMIN_KEY, new_tenant
    short, keep = new_tenant(api), new_tenant(api)
    r = api.call("PATCH", f"/v1/tenants/{short['id']}", body={"settings": {"retention_days": 1}},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    cids = {}
    for name, ten in (("short", short), ("keep", keep)):
        a, b = token_for(api, ten, "ua"), token_for(api, ten, "ub")
        cid = create(api, a, "group", ["ub"])["id"]
        old = [ok(send(api, a, cid, f"old{k}"))["id"] for k in range(2)]
        last_old = mongo.events.find_one({"_id": old[-1]})["eseq"]
        mongo.messages.update_many({"_id": {"$in": old}}, {"$set": {"created_at": past}})
        backdate_log(mongo, cid, last_old, past)
        ok(send(api, a, cid, "new"))
        cids[name] = (cid, b)
    time.sleep(1)  # the tenant settings cache (TENANT_SETTINGS_TTL_MS=500 in the suite)

    def texts():
        return {n: [m["text"] for m in all_pages(api, b, f"/v1/conversations/{cid}/messages")]
                for n, (cid, b) in cids.items()}
    # Run the job until the short tenant's old messages are gone: a pass of the service's own
    # timer may hold the job's lease, or do the deletion itself (then this run counts none).
    deadline = time.time() + 20
    while texts()["short"] != ["new"] and time.time() < deadline:
        run_jobs()
        time.sleep(0.5)
    got = texts()
    assert got["short"] == ["new"]
    assert sorted(got["keep"]) == ["new", "old0", "old1"]


def test_a_stopping_service_ends_its_housekeeping_pass_at_the_next_tenant(api):
    """Retention reads each tenant's settings from the user service (up to 2 s each). A
    housekeeping pass over many tenants with a user service that does not answer took
    tenants x 2 s, and SIGTERM waited for all of it (the stop was killed after 20 s, failing
    every later test that needed the service). A stopping service ends the pass at the next
    tenant: it exits 0 within a few seconds."""
    silent = pysocket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts, never answers
    for _ in range(12):  # conversations of 12 tenants at least, whatever ran before
        tn = new_tenant(api)
        create(api, token_for(api, tn, "hk"), "group", [])
    extra = extra_service("messaging", 15, "messaging-silent-users.log",
                          USER_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
    try:
        url = f"http://127.0.0.1:{extra.port}/internal/v1/messaging/jobs/run"
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(lambda: requests.post(url, headers=INTERNAL_HEADERS, timeout=120))
            time.sleep(3)  # the pass is waiting on the second tenant's settings
            assert not job.done()
            t0 = time.monotonic()
            code = extra.stop()
            took = time.monotonic() - t0
            assert code == 0 and took < 12, (code, took)
            try:
                job.result()
            except requests.RequestException:
                pass  # answered or cut by the stop: either way the process is gone
    finally:
        extra.stop()
        silent.close()
