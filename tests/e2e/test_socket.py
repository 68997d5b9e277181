"""The socket service end to end: two instances, real WebSocket clients (websockets), the real
messaging and user services, Kafka and Redis. Delivery, acks, resume by cursor without gap or
duplicate, bad input, revocation and an instance killed while messages flow."""

import asyncio
import json
import signal
import socket as pysocket
import struct

import pytest
import requests
import websockets

from chat import create, ok, send
from conftest import new_tenant, token_for
from socket_util import Client, HTTP_PORTS, socket_instance, ws_url


@pytest.fixture(scope="module")
def sockets(platform):
    started = []
    try:
        for i in (0, 1):
            s = socket_instance(i)
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
            ok(send(api, a, cid, f"away-{n}"))

        async def during():
            for n in range(25):
                await alice.send(type="message.send", id=f"d{n}", conversation_id=cid,
                                 text=f"during-{n}")
                await asyncio.sleep(0.005)
        sender = asyncio.ensure_future(during())
        bob2 = await Client.connect(1, b, since=cursor)
        await sender
        for n in range(25):
            assert (await alice.ack(f"d{n}", "accepted", timeout=30))["seq"]
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
    s = pysocket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall((f"GET /v1/ws?access_token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def frame(opcode, payload, fin=True, rsv=0):
    mask = b"\x01\x02\x03\x04"
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    hdr = bytes([b0, 0x80 | n]) if n < 126 else bytes([b0, 0x80 | 126]) + struct.pack("!H", n)
    return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def read_close(s):
    """Reads frames until a close frame; returns its code."""
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            if op == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


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
        await asyncio.sleep(0.3)
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
