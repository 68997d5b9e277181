"""The socket service end to end: two instances, real WebSocket clients (websockets), the real
messaging and user services, Kafka and Redis. Delivery, acks, resume by cursor without gap or
duplicate, bad input, revocation and an instance killed while messages flow."""

import asyncio
import json
import re
import time
import signal
import struct

import pytest
import requests
import websockets

from chat import create, ok, send
from conftest import new_tenant, redis_cli, token_for
from socket_util import Client, HTTP_PORTS, raw_connect, read_frames, socket_instance, ws_url


@pytest.fixture(scope="module")
def sockets(platform):
    started = []
    try:
        for i in (0, 1):
            s = socket_instance(i, TYPING_TTL_MS="1500", PRESENCE_BATCH_MS="100",
                                CONNECTIONS_PER_USER="4", INSTANCE_TTL_MS="2000",
                                WS_ALLOWED_ORIGINS="https://app.example.com, http://localhost:3000")
            s.start()
            started.append(s)
        yield started
    finally:
        codes = [s.stop() for s in started]
    text = "".join(s.log_path.read_text(errors="replace") for s in started)
    assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text[-3000:]
    assert codes == [0, 0], codes


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def pair(api, tenant, sockets):
    """alice and bob of one tenant with a direct conversation."""
    a, b = token_for(api, tenant, "alice"), token_for(api, tenant, "bob")
    cid = create(api, a, "direct", ["bob"])["id"]
    return a, b, cid


async def warm(client, api, token, cid, peer):
    """Sends through REST until `peer` sees it live: the instance's consumer has joined."""
    for n in range(40):
        ok(send(api, token, cid, f"warm-{n}"))
        try:
            await peer.wait(lambda f: f.get("type") == "message.created"
                            and f["data"].get("text") == f"warm-{n}", timeout=1.0)
            return
        except AssertionError:
            continue
    raise AssertionError("the socket instance never delivered live")


async def warm_all(api, token, cid, clients):
    """Sends through REST until every client has one message live: each instance's consumer
    has joined and each connection's first catch-up (which starts at "now") is behind it."""
    for n in range(40):
        ok(send(api, token, cid, f"warm-{n}"))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if all(c.events(cid=cid) for c in clients):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("a socket connection never got a message live")


def test_bad_tokens_are_refused_before_the_upgrade(sockets, pair):
    a, _, _ = pair

    async def go():
        for url, hdrs in ((ws_url(0), None), (ws_url(0, "not.a.token"), None),
                          (ws_url(1, a[:-4] + "AAAA"), None),
                          (ws_url(0), {"Authorization": "Bearer nope"})):
            with pytest.raises(websockets.InvalidStatus) as e:
                await websockets.connect(url, additional_headers=hdrs)
            assert e.value.response.status_code == 401
            assert json.loads(e.value.response.body)["status"] == 401
        # The header works as well as the query parameter.
        ws = await websockets.connect(ws_url(0), additional_headers={"Authorization": f"Bearer {a}"})
        await ws.close()
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(f"ws://127.0.0.1:{HTTP_PORTS[0] - 3}/other?access_token={a}")
        assert e.value.response.status_code == 404
    run(go())


def test_two_users_on_two_instances_chat_in_real_time(api, sockets, pair):
    a, b, cid = pair

    async def go():
        alice = await Client.connect(0, a)
        bob = await Client.connect(1, b)
        await warm(alice, api, a, cid, bob)
        await alice.send(type="message.send", id="s1", conversation_id=cid, text="hello bob",
                         client_msg_id="c-1")
        await alice.ack("s1", "pending")
        acc = await alice.ack("s1", "accepted")
        assert acc["seq"] >= 1 and acc["message_id"]
        got = await bob.wait(lambda f: f.get("type") == "message.created"
                             and f["data"].get("text") == "hello bob")
        assert got["data"]["id"] == acc["message_id"] and got["data"]["seq"] == acc["seq"]
        assert got["conversation_id"] == cid and got["cursor"]
        # Alice's own connection sees her message too (another tab of hers would).
        await alice.wait(lambda f: f.get("type") == "message.created"
                         and f["data"].get("text") == "hello bob")
        # The same client_msg_id again is the same message, acked the same.
        await alice.send(type="message.send", id="s2", conversation_id=cid, text="hello bob",
                         client_msg_id="c-1")
        again = await alice.ack("s2", "accepted")
        assert (again["message_id"], again["seq"]) == (acc["message_id"], acc["seq"])
        # Typing reaches the other member.
        await bob.send(type="typing.start", id="t1", conversation_id=cid)
        await bob.ack("t1", "accepted")
        await alice.send(type="ping", id="p1")
        await alice.wait(lambda f: f.get("type") == "pong" and f.get("id") == "p1")
        await alice.close()
        await bob.close()
    run(go())


STAGES = ("kafka", "consumer", "inbox", "write", "total")


def stage_histograms(i):
    """Instance i's socket_delivery_stage_seconds: {stage: ([(le, cumulative)], sum, count)}."""
    text = requests.get(f"http://127.0.0.1:{HTTP_PORTS[i]}/metrics", timeout=5).text
    out = {}
    for st in STAGES:
        rows = [(float(le), int(n)) for le, n in re.findall(
            r'^socket_delivery_stage_seconds_bucket\{stage="' + st + r'",le="([^"]+)"\} (\d+)$', text, re.M)]
        total = re.search(r'^socket_delivery_stage_seconds_sum\{stage="' + st + r'"\} ([\d.]+)$', text, re.M)
        count = re.search(r'^socket_delivery_stage_seconds_count\{stage="' + st + r'"\} (\d+)$', text, re.M)
        assert rows and total and count, f"stage {st} missing from /metrics"
        out[st] = (rows, float(total.group(1)), int(count.group(1)))
    return out


def test_delivery_stages_are_timed_in_metrics(api, sockets, pair):
    """Every live event's way from Kafka to the socket is timed per stage in /metrics
    (socket_delivery_stage_seconds): an event delivered to one connection adds one to each
    per-event stage and one frame to write and total; buckets are cumulative and end at the
    count; the times are those of a live delivery (under a few seconds)."""
    a, b, cid = pair

    async def go():
        bob = await Client.connect(1, b)
        await warm(None, api, a, cid, bob)
        before = stage_histograms(1)
        ok(send(api, a, cid, "timed"))
        await bob.wait(lambda f: f.get("type") == "message.created" and f["data"].get("text") == "timed")
        after = stage_histograms(1)
        await bob.close()
        return before, after

    before, after = run(go())
    for st in STAGES:
        rows, total, count = after[st]
        cums = [n for _, n in rows]
        assert cums == sorted(cums) and rows[-1][0] == float("inf") and cums[-1] == count, (st, rows)
        # Bob's connection is the only one on instance 1 following the conversation; the
        # message.created (and nothing else of this test) went through every stage once.
        assert count - before[st][2] >= 1, (st, before[st][2], count)
        assert 0 <= total - before[st][1] < 5 * (count - before[st][2]), (st, total, before[st][1])


# The messaging service's defaults (services/messaging/main.c), which the platform fixture keeps:
# a write waits up to LOCK_WAIT_MS for its conversation's lease.
LOCK_WAIT_MS = 5000


def test_a_send_queued_behind_a_busy_conversation_is_accepted(api, sockets, pair):
    """Another writer holds the conversation's write lease for almost LOCK_WAIT_MS: messaging
    waits for it and stores the message a little over 5 s after the send. The socket must still
    be waiting for that answer (UPSTREAM_TIMEOUT_MS above LOCK_WAIT_MS + LOCK_TTL_MS): with
    the 5 s it had, the client got `rejected`, retryable, for a message its members then
    received."""
    a, b, cid = pair

    async def go():
        alice = await Client.connect(0, a)
        bob = await Client.connect(1, b)
        await warm(alice, api, a, cid, bob)
        # The lease ends 1 ms before messaging's own deadline for this send can (its wait
        # starts after this SET): messaging takes it and answers after LOCK_WAIT_MS - 1 ms
        # plus its polling pause and the write itself.
        redis_cli("SET", f"lock:conv:{cid}", "held-by-the-test", "PX", str(LOCK_WAIT_MS - 1))
        t0 = time.monotonic()
        await alice.send(type="message.send", id="slow", conversation_id=cid, text="held back",
                         client_msg_id="c-slow")
        await alice.ack("slow", "pending")
        done = await alice.wait(lambda f: f.get("type") == "ack" and f.get("id") == "slow"
                                and f.get("status") != "pending", timeout=30.0)
        waited = time.monotonic() - t0
        assert done["status"] == "accepted", done
        assert waited >= (LOCK_WAIT_MS - 500) / 1000, waited  # it did wait for the lease
        got = await bob.wait(lambda f: f.get("type") == "message.created"
                             and f["data"].get("text") == "held back")
        assert got["data"]["id"] == done["message_id"]
        await alice.close()
        await bob.close()
    run(go())


def receipts(client, cid, type_):
    return [f["data"] for f in client.events(type_, cid)]


def test_receipts_reach_the_other_members_live_and_on_resume(api, tenant, sockets):
    """Bob confirms receipt and reads over his socket: Alice and Carol (on both instances) and
    Bob's other tab get `message.delivered` / `conversation.read` live, positions only move
    forward, a bad receipt is rejected with the messaging service's problem, and Carol, away
    meanwhile, gets a receipt made over HTTP in her catch-up exactly once."""
    a, b, c = (token_for(api, tenant, n) for n in ("ralice", "rbob", "rcarol"))
    cid = create(api, a, "group", ["rbob", "rcarol"], title="receipts")["id"]
    other = token_for(api, new_tenant(api), "reve")
    eve_cid = create(api, other, "direct", ["rmallory"])["id"]

    async def go():
        alice = await Client.connect(0, a)
        bob = await Client.connect(1, b)
        bob_tab = await Client.connect(0, b)
        carol = await Client.connect(1, c)
        await warm_all(api, a, cid, (alice, bob, bob_tab, carol))
        seqs = []
        for n in range(3):
            await alice.send(type="message.send", id=f"m{n}", conversation_id=cid, text=f"r{n}")
            seqs.append((await alice.ack(f"m{n}", "accepted"))["seq"])
        last = max(seqs)
        for who in (alice, bob, bob_tab, carol):
            await who.wait(lambda f: f.get("type") == "message.created"
                           and f["data"].get("seq") == last)

        await bob.send(type="message.received", id="d1", conversation_id=cid, seq=last)
        await bob.ack("d1", "pending")
        acc = await bob.ack("d1", "accepted")
        assert acc["delivered_seq"] == last and acc["read_seq"] == 0, acc
        for who in (alice, carol, bob_tab):
            d = await who.wait(lambda f: f.get("type") == "message.delivered"
                               and f.get("conversation_id") == cid)
            assert d["data"]["user_id"] == "rbob" and d["data"]["delivered_seq"] == last, d
            assert d["cursor"] and d["eseq"] >= 1

        await bob.send(type="message.read", id="r1", conversation_id=cid, seq=last - 1)
        acc = await bob.ack("r1", "accepted")
        assert (acc["read_seq"], acc["delivered_seq"], acc["unread_count"]) == (last - 1, last, 1), acc
        for who in (alice, carol, bob_tab):
            r = await who.wait(lambda f: f.get("type") == "conversation.read"
                               and f.get("conversation_id") == cid)
            assert (r["data"]["user_id"], r["data"]["read_seq"], r["data"]["delivered_seq"]) == \
                ("rbob", last - 1, last), r

        # Forward only: an older read changes nothing and tells nobody.
        await bob.send(type="message.read", id="r2", conversation_id=cid, seq=1)
        assert (await bob.ack("r2", "accepted"))["read_seq"] == last - 1
        # Beyond the last message, and another tenant's conversation: rejected, nobody told.
        await bob.send(type="message.read", id="r3", conversation_id=cid, seq=last + 50)
        rej = await bob.ack("r3", "rejected")
        assert rej["problem"]["status"] == 400 and "beyond" in rej["problem"]["detail"], rej
        assert rej["retryable"] is False
        await bob.send(type="message.received", id="r4", conversation_id=eve_cid, seq=1)
        rej = await bob.ack("r4", "rejected")
        assert rej["problem"]["status"] == 404, rej

        # Carol leaves with her cursor; Bob reads the rest over HTTP meanwhile.
        await asyncio.sleep(0.5)
        cursor = carol.cursor()
        await carol.close()
        assert len(receipts(carol, cid, "conversation.read")) == 1
        ok(api.call("POST", f"/v1/conversations/{cid}/read", b, {"seq": last}), 200)
        live = await alice.wait(lambda f: f.get("type") == "conversation.read"
                                and f["data"]["read_seq"] == last)
        assert live["data"]["user_id"] == "rbob"
        carol2 = await Client.connect(0, c, since=cursor)
        await carol2.wait(lambda f: f.get("type") == "conversation.read")
        await asyncio.sleep(0.5)  # a duplicate or an older receipt would arrive now
        assert [(d["user_id"], d["read_seq"]) for d in receipts(carol2, cid, "conversation.read")] \
            == [("rbob", last)]
        assert receipts(carol2, cid, "message.delivered") == []
        for who in (alice, bob_tab):
            assert [d["read_seq"] for d in receipts(who, cid, "conversation.read")] == [last - 1, last]
            assert len(receipts(who, cid, "message.delivered")) == 1
        for cl in (alice, bob, bob_tab, carol2):
            await cl.close()
    run(go())


def test_receipts_of_a_large_conversation_reach_only_the_readers_devices(api, tenant, sockets):
    """Above 100 members a receipt is not fanned out: only the reader's own connections get it
    (the event's audience), on every instance."""
    a, b = token_for(api, tenant, "lalice"), token_for(api, tenant, "lbob")
    names = ["lbob"] + [f"lmember{i:03d}" for i in range(100)]
    cid = create(api, a, "channel", names[:50], title="large")["id"]
    ok(api.call("POST", f"/v1/conversations/{cid}/members", a, {"user_ids": names[50:]}), 200)

    async def go():
        alice = await Client.connect(1, a)
        bob = await Client.connect(0, b)
        bob_tab = await Client.connect(1, b)
        await warm_all(api, a, cid, (alice, bob, bob_tab))
        last = ok(send(api, a, cid, "to many"))["seq"]
        await bob_tab.wait(lambda f: f.get("type") == "message.created"
                           and f["data"].get("text") == "to many")
        await bob.send(type="message.read", id="r1", conversation_id=cid, seq=last)
        assert (await bob.ack("r1", "accepted"))["unread_count"] == 0
        for who in (bob, bob_tab):
            r = await who.wait(lambda f: f.get("type") == "conversation.read")
            assert r["data"]["read_seq"] == last
        # A later message shows Alice's connection is past the receipt's place in the log.
        ok(send(api, a, cid, "after"))
        await alice.wait(lambda f: f.get("type") == "message.created"
                         and f["data"].get("text") == "after")
        assert not alice.events("conversation.read") and not alice.events("message.delivered")
        for cl in (alice, bob, bob_tab):
            await cl.close()
    run(go())


def texts(client, cid, prefix):
    return [f["data"]["text"] for f in client.events(cid=cid) if f["data"].get("text", "").startswith(prefix)]


def test_resume_with_a_cursor_has_no_gap_and_no_duplicate_at_the_seam(api, sockets, pair):
    """Bob leaves with his cursor, 25 messages are sent while he is away, and 25 more while he
    reconnects (so events arrive live during his catch-up): he gets all 50 once, in seq order.
    (The messaging service allows 60 sends per user and minute.)"""
    a, b, cid = pair

    async def go():
        bob = await Client.connect(0, b)
        alice = await Client.connect(1, a)
        await warm(alice, api, a, cid, bob)
        await asyncio.sleep(0.3)
        cursor = bob.cursor()
        assert cursor
        await bob.close()
        for n in range(25):
            # In a thread: Alice's connection must keep answering the server's pings (PING_S)
            # while the HTTP sends run, or a slow store makes the server hang up on her.
            ok(await asyncio.to_thread(send, api, a, cid, f"away-{n}"))

        def frame(n, id_):
            return dict(type="message.send", id=id_, conversation_id=cid, text=f"during-{n}",
                        client_msg_id=f"during-{n}")

        async def during():
            for n in range(25):
                await alice.send(**frame(n, f"d{n}"))
                await asyncio.sleep(0.005)
        sender = asyncio.ensure_future(during())
        bob2 = await Client.connect(1, b, since=cursor)
        await sender
        for n in range(25):
            # A burst into one conversation can outlast the socket's upstream timeout on a slow
            # store: the send is then rejected as retryable, and the client resends it, as the
            # protocol tells clients to. Its client_msg_id makes the retry answer the stored
            # message, never a second one (the checks below would see a duplicate).
            id_, tries = f"d{n}", 0
            while True:
                got = await alice.wait(lambda f: f.get("type") == "ack" and f.get("id") == id_
                                       and f.get("status") in ("accepted", "rejected"), timeout=30)
                if got["status"] == "accepted":
                    break
                assert got.get("retryable") and tries < 3, got
                tries += 1
                id_ = f"d{n}-retry{tries}"
                await alice.send(**frame(n, id_))
            assert got["seq"]
        await bob2.wait(lambda f: len(texts(bob2, cid, "during-")) == 25, timeout=30)
        await asyncio.sleep(0.5)  # anything duplicated would arrive now
        got = bob2.events(cid=cid)
        seqs = [f["data"]["seq"] for f in got]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
        eseqs = [f["eseq"] for f in got]
        assert eseqs == list(range(eseqs[0], eseqs[0] + len(eseqs))), eseqs
        assert texts(bob2, cid, "away-") == [f"away-{n}" for n in range(25)]
        # Sends of one connection run concurrently upstream: their seqs, not the order they
        # were written in, order them.
        assert sorted(texts(bob2, cid, "during-")) == sorted(f"during-{n}" for n in range(25))
        await bob2.close()
        await alice.close()
    run(go())


def test_bad_frames_get_a_clear_answer_and_reach_nobody(api, tenant, sockets, pair):
    a, b, cid = pair
    other = new_tenant(api)
    eve = token_for(api, other, "eve")
    eve_cid = create(api, eve, "group", ["mallory"], title="x")["id"]

    async def go():
        alice = await Client.connect(0, a)
        bob = await Client.connect(1, b)
        await alice.ws.send("this is not json")
        await alice.wait(lambda f: f.get("type") == "error" and f["code"] == "bad-json")
        await alice.send(type="message.fly", id="u1")
        r = await alice.ack("u1", "rejected")
        assert r["reason"] == "unknown-type" and r["problem"]["status"] == 400
        await alice.send(type="message.send", id="v1")
        r = await alice.ack("v1", "rejected")
        assert "conversation_id" in r["problem"]["detail"]
        # Another tenant's conversation: not found, and nothing reaches anyone.
        await alice.send(type="message.send", id="x1", conversation_id=eve_cid, text="psst")
        r = await alice.ack("x1", "rejected")
        assert r["problem"]["status"] == 404 and r["retryable"] is False
        await alice.send(type="typing.start", id="x2", conversation_id=eve_cid)
        assert (await alice.ack("x2", "rejected"))["reason"] == "not-found"
        await asyncio.sleep(0.5)
        assert not [f for f in alice.frames + bob.frames if f.get("type") == "message.created"
                    and f["data"].get("text") == "psst"]
        assert not [f for f in bob.frames if f.get("type") in ("error", "typing")]
        await bob.close()
        # Binary frames close with 1003, oversized messages with 1009.
        await alice.ws.send(b"\x00\x01")
        await alice.task
        assert alice.closed == 1003
        big = await Client.connect(0, a)
        await big.ws.send(json.dumps({"type": "ping", "pad": "x" * 70000}))
        await big.task
        assert big.closed == 1009
    run(go())


def raw_upgrade(port, token):
    """A bare TCP client speaking the handshake, to send frames no library would send."""
    return raw_connect(port, token)


def frame(opcode, payload, fin=True, rsv=0):
    mask = b"\x01\x02\x03\x04"
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    hdr = bytes([b0, 0x80 | n]) if n < 126 else bytes([b0, 0x80 | 126]) + struct.pack("!H", n)
    return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def read_close(s):
    """Reads frames until a close frame; returns its code (None when the connection ended
    without one)."""
    code = read_frames(s)[1]
    return None if code == "timeout" else code


def test_protocol_conformance_ping_fragments_close_utf8_reserved_bits(sockets, pair):
    a, _, _ = pair
    port = HTTP_PORTS[0] - 3

    async def go():
        c = await Client.connect(0, a)
        pong = await c.ws.ping(b"hi")
        await asyncio.wait_for(pong, 5)          # a protocol ping is answered with a pong
        # A message in three fragments is one frame to the server.
        await c.ws.send(iter(['{"type":"ping",', '"id":"f', 'rag"}']))
        await c.ack("frag", "accepted")
        await c.ws.close(1000, "bye")            # the close handshake completes, code echoed
        await c.task
        assert c.closed == 1000
    run(go())
    s = raw_upgrade(port, a)
    s.sendall(frame(1, b'{"type":"ping","t":"\xc3\x28"}'))  # invalid UTF-8 in a text frame
    assert read_close(s) == 1007
    s.close()
    s = raw_upgrade(port, a)
    s.sendall(frame(1, b'{"type":"ping"}', rsv=4))          # RSV1 without an extension
    assert read_close(s) == 1002
    s.close()
    s = raw_upgrade(port, a)
    s.sendall(frame(9, b"x" * 10, fin=False))               # a fragmented control frame
    assert read_close(s) == 1002
    s.close()


def test_revoked_session_is_closed_with_4002(api, tenant, sockets):
    r = api.call("POST", "/v1/auth/token", body={"user_id": "rita", "device_name": "phone"},
                 auth=(tenant["api_key"], tenant["api_secret"]))
    tok = r.json()["access_token"]

    async def go():
        c = await Client.connect(1, tok)
        await c.send(type="ping", id="p")
        await c.ack("p", "accepted")
        assert api.call("POST", "/v1/auth/logout", tok).status_code == 204
        await asyncio.wait_for(c.task, 20)
        assert c.closed == 4002
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(ws_url(0, tok))
        assert e.value.response.status_code == 401
    run(go())


def test_killed_instance_clients_resume_on_the_other_exactly_once(api, sockets, pair):
    """Bob is on instance 1, which is killed (SIGKILL) while Alice sends 50 messages; Bob
    reconnects to instance 2 with his last cursor and ends with all 50, once each, in order."""
    a, b, cid = pair

    async def go():
        bob = await Client.connect(0, b)
        alice = await Client.connect(1, a)
        await warm(alice, api, a, cid, bob)

        async def flow():
            for n in range(50):
                await alice.send(type="message.send", id=f"k{n}", conversation_id=cid,
                                 text=f"kill-{n}")
                await alice.ack(f"k{n}", "accepted")
        sender = asyncio.ensure_future(flow())
        # Kill mid-flow: once Bob has some of the messages (a slow machine may take a while).
        await bob.wait(lambda f: len(texts(bob, cid, "kill-")) >= 3, timeout=30)
        sockets[0].proc.send_signal(signal.SIGKILL)
        sockets[0].proc.wait()
        await bob.task
        cursor = bob.cursor()
        before = texts(bob, cid, "kill-")
        bob2 = await Client.connect(1, b, since=cursor)
        await sender
        await bob2.wait(lambda f: f.get("type") == "message.created"
                        and f["data"].get("text") == "kill-49", timeout=30)
        await asyncio.sleep(0.5)
        after = texts(bob2, cid, "kill-")
        assert before and after, (len(before), len(after))  # the kill fell mid-flow
        assert before + after == [f"kill-{n}" for n in range(50)], (len(before), len(after))
        await bob2.close()
        await alice.close()
    try:
        run(go())
    finally:
        # The module's fixture expects instance 1 back for the tests after this one.
        sockets[0].start()


def presence_of(token, user, instance=0):
    return requests.get(f"http://127.0.0.1:{HTTP_PORTS[instance]}/v1/users/{user}/presence",
                        headers={"Authorization": f"Bearer {token}"}, timeout=5)


def wait_presence(token, user, status, instance=0, timeout=10.0):
    """Polls GET /v1/users/{id}/presence until `user` shows `status`; returns the body."""
    deadline = time.time() + timeout
    while True:
        r = presence_of(token, user, instance)
        if r.status_code == 200 and r.json()["status"] == status:
            return r.json()
        assert time.time() < deadline, (r.status_code, r.text)
        time.sleep(0.05)


def typing_frames(client, user):
    return [(f["conversation_id"], f["state"]) for f in client.frames
            if f.get("type") == "typing" and f.get("user_id") == user]


def presence_items(client, user):
    return [i for f in client.frames if f.get("type") == "presence"
            for i in f["items"] if i["user_id"] == user]


def test_typing_crosses_instances_once_and_expires(api, tenant, sockets):
    """Typing goes through Redis pub/sub: bob on instance 2 types, alice on instance 1 sees it
    once per start (a repeated start only extends it), the stop, and a stop of its own when a
    start is not repeated within TYPING_TTL_MS (1.5 s here). Eve, in no shared conversation,
    sees nothing; bob's own connection gets no echo."""
    a, b, e = (token_for(api, tenant, u) for u in ("alice", "bob", "eve"))
    cid = create(api, a, "direct", ["bob"])["id"]
    other = create(api, e, "group", [], title="eve alone")["id"]

    async def go():
        alice, eve = await Client.connect(0, a), await Client.connect(0, e)
        bob = await Client.connect(1, b)
        for t, u in ((a, "alice"), (b, "bob"), (e, "eve")):
            wait_presence(t, u, "online")  # each connection has loaded its conversations
        await bob.send(type="typing.start", id="t1", conversation_id=cid)
        await bob.ack("t1", "accepted")
        await alice.wait(lambda f: f.get("type") == "typing" and f["state"] == "start")
        await bob.send(type="typing.start", conversation_id=cid)  # a refresh
        await bob.send(type="typing.stop", conversation_id=cid)
        await alice.wait(lambda f: f.get("type") == "typing" and f["state"] == "stop")
        assert typing_frames(alice, "bob") == [(cid, "start"), (cid, "stop")]
        # Started and left: the typing state ends by itself after the TTL.
        t0 = time.monotonic()
        await bob.send(type="typing.start", conversation_id=cid)
        await alice.wait(lambda f: len(typing_frames(alice, "bob")) == 4, timeout=10)
        assert 1.2 < time.monotonic() - t0 < 5.0
        assert typing_frames(alice, "bob")[2:] == [(cid, "start"), (cid, "stop")]
        # Typing where one is not a member is refused; typing never reaches a non-member.
        await bob.send(type="typing.start", id="t2", conversation_id=other)
        rej = await bob.ack("t2", "rejected")
        assert rej["reason"] == "not-found"
        await eve.send(type="typing.start", conversation_id=other)
        await asyncio.sleep(0.5)
        assert typing_frames(eve, "bob") == [] and typing_frames(bob, "bob") == []
        assert typing_frames(alice, "eve") == [] and typing_frames(bob, "eve") == []
        for c in (alice, bob, eve):
            await c.close()
    run(go())


def test_presence_crosses_instances_with_invisible_and_last_seen(api, tenant, sockets):
    """Bob connects on instance 2: alice (instance 1, shares a conversation) is told he is
    online; eve (same tenant, no shared conversation) is told nothing. Invisible looks offline
    to others, away shows, and when bob's last connection closes alice gets offline with the
    last-seen time, which GET /v1/users/{id}/presence reports too."""
    a, b, e = (token_for(api, tenant, u) for u in ("alice", "bob", "eve"))
    create(api, a, "direct", ["bob"])
    create(api, e, "group", [], title="eve alone")
    other = token_for(api, new_tenant(api), "mallory")

    async def go():
        alice, eve = await Client.connect(0, a), await Client.connect(0, e)
        wait_presence(a, "alice", "online")
        wait_presence(e, "eve", "online")
        assert presence_of(a, "bob").status_code == 404  # never connected
        t0 = time.time()
        bob = await Client.connect(1, b)
        await alice.wait(lambda f: presence_items(alice, "bob"))
        item = presence_items(alice, "bob")[-1]
        assert item["status"] == "online" and item["last_seen"]
        got = wait_presence(a, "bob", "online", instance=0)
        assert "own" not in got
        # Bob sees alice's state by reading it, and his own chosen status.
        assert presence_of(b, "alice", instance=1).json()["status"] == "online"
        await bob.send(type="presence.set", id="p1", status="invisible")
        await bob.ack("p1", "accepted")
        await alice.wait(lambda f: presence_items(alice, "bob")[-1]["status"] == "offline")
        assert wait_presence(a, "bob", "offline")["last_seen"]
        assert presence_of(b, "bob", instance=1).json()["own"] == "invisible"
        await bob.send(type="presence.set", id="p2", status="away")
        await alice.wait(lambda f: presence_items(alice, "bob")[-1]["status"] == "away")
        await bob.send(type="presence.set", id="p3", status="online")
        await alice.wait(lambda f: presence_items(alice, "bob")[-1]["status"] == "online")
        await bob.close()
        await alice.wait(lambda f: presence_items(alice, "bob")[-1]["status"] == "offline")
        gone = wait_presence(a, "bob", "offline")
        seen = gone["last_seen"]
        assert seen and seen == presence_items(alice, "bob")[-1]["last_seen"]
        when = time.mktime(time.strptime(seen[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert t0 - 2 <= when <= time.time() + 2, (seen, t0)
        # Eve shares no conversation with bob: no presence frame about him, ever.
        assert presence_items(eve, "bob") == [] and presence_items(eve, "alice") == []
        # Another tenant's user cannot see bob (404, not 403), nor can a bad token.
        assert presence_of(other, "bob").status_code == 404
        assert presence_of("nope", "bob").status_code == 401
        await alice.close()
        await eve.close()
    run(go())


def test_origin_allowlist(api, tenant, sockets):
    """A browser page of an allowed origin connects; another site's page is refused with 403
    before the upgrade (cross-site WebSocket hijacking); clients without Origin connect."""
    a = token_for(api, tenant, "alice")

    async def go():
        ws = await websockets.connect(ws_url(0, a), origin="https://app.example.com")
        await ws.close()
        for bad in ("https://evil.example", "https://app.example.com.evil.example", "null"):
            with pytest.raises(websockets.InvalidStatus) as e:
                await websockets.connect(ws_url(1, a), origin=bad)
            assert e.value.response.status_code == 403
            assert json.loads(e.value.response.body)["type"] == "urn:chat:problem:forbidden"
        ws = await websockets.connect(ws_url(1, a))
        await ws.close()
    run(go())


def test_the_tenants_own_origin_allowlist(api, sockets):
    """A tenant's ws_allowed_origins (PATCH /v1/tenants/{id}) narrows the platform's
    WS_ALLOWED_ORIGINS for its users: another allowed site of the platform is refused for them."""
    from conftest import ADMIN_KEY
    t = new_tenant(api)
    r = api.call("PATCH", f"/v1/tenants/{t['id']}", body={"settings": {"ws_allowed_origins": ["http://localhost:3000"]}},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    a = token_for(api, t, "alice")

    async def go():
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(ws_url(0, a), origin="https://app.example.com")
        assert e.value.response.status_code == 403
        assert "ws_allowed_origins" in json.loads(e.value.response.body)["detail"]
        ws = await websockets.connect(ws_url(1, a), origin="http://localhost:3000")
        await ws.close()
        ws = await websockets.connect(ws_url(0, a))  # not a browser: no Origin to check
        await ws.close()
    run(go())


def test_connection_cap_counts_every_instance(api, tenant, sockets):
    """CONNECTIONS_PER_USER (4 here) holds across instances: with two connections on each
    instance a fifth is refused on either, though each has only two; one closed frees a slot."""
    z = token_for(api, tenant, "zed")

    async def go():
        conns = [await Client.connect(i % 2, z) for i in range(4)]
        wait_presence(z, "zed", "online")
        for i in (0, 1):
            # A connection counts once it has registered, after loading its conversations (a
            # moment under load): until all four have, a fifth may still get in; closed again.
            deadline = time.time() + 10
            while True:
                try:
                    extra = await websockets.connect(ws_url(i, z))
                except websockets.InvalidStatus as e:
                    assert e.response.status_code == 429
                    break
                await extra.close()
                assert time.time() < deadline, "a fifth connection was never refused"
                await asyncio.sleep(0.2)
        await conns.pop().close()
        deadline = time.time() + 10
        while True:
            try:
                conns.append(await Client.connect(0, z))
                break
            except websockets.InvalidStatus as e:
                assert e.response.status_code == 429 and time.time() < deadline
                await asyncio.sleep(0.1)
        for c in conns:
            await c.close()
    run(go())


def notes(client, pred=lambda d: True):
    return [f for f in client.frames if f.get("type") == "notification.created" and pred(f["data"])]


def test_notifications_reach_the_recipients_connections_live_and_nobody_else(api, tenant, sockets):
    """The notification service's notification.created (topic notifications) reaches every live
    connection of its recipient, on both instances, once each: for a message from someone else
    and for a tenant backend's custom notification. The sender, another member of the tenant and
    a user of another tenant with the same user id get nothing."""
    from users_lib import server
    a, b, c = (token_for(api, tenant, n) for n in ("nalice", "nbob", "ncarl"))
    other = new_tenant(api)
    b2 = token_for(api, other, "nbob")
    cid = create(api, a, "direct", ["nbob"])["id"]
    server(api, tenant, "PUT", "/v1/server/users/nbackend", {"roles": ["tenant_admin"]})
    admin = token_for(api, tenant, "nbackend")

    async def in_inbox(token, pred, timeout=90.0):
        deadline = time.monotonic() + timeout
        while not any(pred(n) for n in ok(api.call("GET", "/v1/notifications?limit=100", token))["items"]):
            assert time.monotonic() < deadline, "the notification service never stored it"
            await asyncio.sleep(0.2)

    async def go():
        alice = await Client.connect(0, a)
        bob0 = await Client.connect(0, b)
        bob1 = await Client.connect(1, b)
        carl = await Client.connect(1, c)
        bob_other = await Client.connect(1, b2)
        await warm_all(api, a, cid, [alice, bob0, bob1])
        m = ok(send(api, a, cid, "a notification for bob"))
        # The notification service works through every message of the run in order (FerretDB
        # writes): wait until it stored this one, then the frame follows at once.
        await in_inbox(b, lambda n: n.get("message_id") == m["id"])
        for bob in (bob0, bob1):
            got = await bob.wait(lambda f: f.get("type") == "notification.created"
                                 and f["data"].get("message_id") == m["id"], timeout=15)
            assert got["data"]["user_id"] == "nbob" and got["data"]["type"] == "message"
            assert got["data"]["actor_id"] == "nalice" and got["data"]["text"] == "a notification for bob"
            assert got["event_id"] == got["data"]["id"] and got["time"] and "cursor" not in got
        r = ok(api.call("POST", "/v1/notifications", admin,
                        {"user_ids": ["nbob"], "title": "Maintenance", "body": "tonight",
                         "data": {"kind": "ops"}}), 202)
        assert r["recipients"] == 1
        await in_inbox(b, lambda n: n["type"] == "custom")
        for bob in (bob0, bob1):
            got = await bob.wait(lambda f: f.get("type") == "notification.created"
                                 and f["data"].get("type") == "custom", timeout=15)
            assert got["data"]["title"] == "Maintenance" and got["data"]["text"] == "tonight"
            assert got["data"]["data"] == {"kind": "ops"}
        await asyncio.sleep(1.0)  # a duplicate or a stray delivery has had time to arrive
        for bob in (bob0, bob1):
            ids = [f["data"]["id"] for f in notes(bob)]
            assert len(ids) == len(set(ids)), ids  # each notification once per connection
        assert notes(alice, lambda d: d.get("message_id") == m["id"]) == []
        assert notes(alice, lambda d: d["type"] == "custom") == []
        assert notes(carl) == [] and notes(bob_other) == []
        for cl in (alice, bob0, bob1, carl, bob_other):
            await cl.close()
    run(go())


def test_users_of_a_killed_instance_go_offline_for_the_members(api, tenant, sockets):
    """Instance 1 is killed (SIGKILL: no disconnect reaches Redis). Bob, whose only connection was
    there, goes offline for Alice (on instance 2) within a bound set by INSTANCE_TTL_MS (2 s
    here), not PRESENCE_TTL_MS (60 s): instance 2 sweeps the dead one's connections. Carol,
    connected to both, stays online and nobody is told otherwise."""
    a, b, c = (token_for(api, tenant, n) for n in ("kalice", "kbob", "kcarol"))
    cid = create(api, a, "group", ["kbob", "kcarol"], title="kill")["id"]

    async def go():
        alice = await Client.connect(1, a)
        wait_presence(a, "kalice", "online", instance=1)
        bob = await Client.connect(0, b)
        carol0 = await Client.connect(0, c)
        carol1 = await Client.connect(1, c)
        await alice.wait(lambda f: any(i["status"] == "online" for i in presence_items(alice, "kbob")))
        await alice.wait(lambda f: any(i["status"] == "online" for i in presence_items(alice, "kcarol")))
        wait_presence(a, "kcarol", "online", instance=1)
        await asyncio.sleep(1.0)  # carol's second connection is registered too
        sockets[0].proc.send_signal(signal.SIGKILL)
        sockets[0].proc.wait()
        killed = time.monotonic()
        await bob.task
        await carol0.task
        await alice.wait(lambda f: presence_items(alice, "kbob")[-1]["status"] == "offline",
                         timeout=15)
        took = time.monotonic() - killed
        assert took < 8.0, took  # INSTANCE_TTL_MS 2 s + a beat period + the batch, with slack
        assert presence_items(alice, "kbob")[-1]["last_seen"]
        assert wait_presence(a, "kbob", "offline", instance=1, timeout=1)["last_seen"]
        await asyncio.sleep(1.0)
        assert all(i["status"] == "online" for i in presence_items(alice, "kcarol"))
        assert presence_of(a, "kcarol", instance=1).json()["status"] == "online"
        for cl in (alice, carol1):
            await cl.close()
    try:
        run(go())
    finally:
        sockets[0].start()
