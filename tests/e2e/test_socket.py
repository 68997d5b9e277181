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
