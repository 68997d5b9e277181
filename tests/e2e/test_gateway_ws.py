"""The gateway's WebSocket proxy end to end: real `websockets` clients connect to /v1/ws on a
gateway whose socket pool holds two real socket instances. Chat and resume by cursor work
through it, refusals of the socket service come back unchanged, bytes are counted, and an
instance killed under a client gets that client a close frame 1012 from the gateway, after
which it reconnects through the gateway to the other instance and resumes."""

import asyncio
import json
import signal

import pytest
import requests
import websockets

from chat import create, ok, send
from conftest import PORTS, token_for
from socket_util import Client, WS_PORTS, socket_instance
from test_gateway_edge import gateway, sanitizer_clean

WSGW_PORT = PORTS["gateway"] + 10


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
    sanitizer_clean(*started)
    assert codes == [0, 0], codes


@pytest.fixture(scope="module")
def wsgw(sockets):
    urls = ",".join(f"http://127.0.0.1:{p}" for p in WS_PORTS[:2])
    g = gateway(WSGW_PORT, {"SOCKET_URLS": urls, "RETRY_BACKOFF_MS": "0"}, "gateway-ws")
    yield g
    assert g.stop() == 0
    sanitizer_clean(g)


def url(token=None, since=None):
    q = [f"access_token={token}"] if token else []
    if since:
        q.append(f"since={since}")
    return f"ws://127.0.0.1:{WSGW_PORT}/v1/ws" + ("?" + "&".join(q) if q else "")


async def connect(token, since=None):
    return Client(await websockets.connect(url(token, since), max_size=2**22))


def metrics():
    text = requests.get(f"http://127.0.0.1:{WSGW_PORT}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith("gateway_ws_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture
def pair(api, tenant, wsgw):
    a, b = token_for(api, tenant, "alice"), token_for(api, tenant, "bob")
    return a, b, create(api, a, "direct", ["bob"])["id"]


async def warm(api, token, cid, peer):
    """Sends through REST until `peer` sees it live (its instance's consumer has joined)."""
    for n in range(40):
        ok(send(api, token, cid, f"warm-{n}"))
        try:
            await peer.wait(lambda f: f.get("type") == "message.created"
                            and f["data"].get("text") == f"warm-{n}", timeout=1.0)
            return
        except AssertionError:
            continue
    raise AssertionError("never delivered live through the gateway")


def texts(client, cid, prefix):
    return [f["data"]["text"] for f in client.events(cid=cid)
            if f["data"].get("text", "").startswith(prefix)]


def test_refusals_of_the_socket_service_come_back_as_they_are(pair):
    a, _, _ = pair

    async def go():
        for u in (url(), url("not.a.token")):
            with pytest.raises(websockets.InvalidStatus) as e:
                await websockets.connect(u)
            assert e.value.response.status_code == 401
            body = json.loads(e.value.response.body)
            assert body["status"] == 401 and body["type"].startswith("urn:chat:problem:")
        # The token in the header is passed through as well.
        ws = await websockets.connect(url(), additional_headers={"Authorization": f"Bearer {a}"})
        await ws.close()
    asyncio.run(go())
    # Not an upgrade: the gateway's plain proxy answers (the socket port speaks WebSocket only).
    r = requests.get(f"http://127.0.0.1:{WSGW_PORT}/v1/ws", timeout=5)
    assert r.status_code >= 400


def test_chat_and_resume_through_the_gateway(api, pair):
    a, b, cid = pair
    before = metrics()

    async def go():
        alice = await connect(a)
        bob = await connect(b)
        await warm(api, a, cid, bob)
        await alice.send(type="message.send", id="s1", conversation_id=cid, text="via gateway",
                         client_msg_id="g-1")
        acc = await alice.ack("s1", "accepted")
        got = await bob.wait(lambda f: f.get("type") == "message.created"
                             and f["data"].get("text") == "via gateway")
        assert got["data"]["id"] == acc["message_id"]
        # A large frame (masked client frame with a 16-bit length) crosses intact.
        big = "x" * 60000
        await alice.send(type="message.send", id="s2", conversation_id=cid, text=big[:3900],
                         client_msg_id="g-2", pad=big)
        await alice.wait(lambda f: f.get("id") == "s2" and f.get("type") == "ack"
                         and f.get("status") in ("accepted", "rejected"))
        # Bob leaves with his cursor; messages sent meanwhile arrive once on his return.
        await asyncio.sleep(0.3)
        cursor = bob.cursor()
        await bob.close()
        for n in range(10):
            ok(send(api, a, cid, f"away-{n}"))
        bob2 = await connect(b, since=cursor)
        await bob2.wait(lambda f: f.get("type") == "message.created"
                        and f["data"].get("text") == "away-9")
        await asyncio.sleep(0.3)
        assert texts(bob2, cid, "away-") == [f"away-{n}" for n in range(10)]
        assert texts(bob2, cid, "via gateway") == []  # before the cursor: not again
        await alice.close()
        await bob2.close()
    asyncio.run(go())
    after = metrics()
    up = 'gateway_ws_bytes_total{direction="to_upstream"}'
    down = 'gateway_ws_bytes_total{direction="to_client"}'
    assert after[up] - before.get(up, 0) > 60000
    assert after[down] - before.get(down, 0) > 1000
    relayed = 'gateway_ws_upgrades_total{result="relayed"}'
    assert after[relayed] - before.get(relayed, 0) >= 3
    assert after["gateway_ws_connections"] == 0


def test_killed_instance_gets_clients_1012_and_they_resume_through_the_gateway(api, sockets,
                                                                                pair):
    a, b, cid = pair

    async def go():
        # Least connections: the two clients land on the two instances, one each.
        alice = await connect(a)
        bob = await connect(b)
        await warm(api, a, cid, bob)
        assert metrics()["gateway_ws_connections"] == 2
        for s in sockets:
            conns = requests.get(f"http://127.0.0.1:{s.port}/metrics", timeout=5).text
            assert "\nsocket_connections 1\n" in conns, conns[:400]

        async def flow():
            for n in range(30):
                ok(send(api, a, cid, f"kill-{n}"))
                await asyncio.sleep(0.01)
        sender = asyncio.ensure_future(flow())
        await asyncio.sleep(0.2)
        # Whoever is on instance 1 is told to reconnect; the other client stays connected.
        sockets[0].proc.send_signal(signal.SIGKILL)
        sockets[0].proc.wait()
        await asyncio.sleep(1.0)
        gone = [c for c in (alice, bob) if c.task.done()]
        assert len(gone) == 1, [c.closed for c in (alice, bob)]
        assert gone[0].closed == 1012
        assert gone[0].ws.close_reason == "service restart"
        await sender
        if gone[0] is bob:
            cursor = bob.cursor()
            before = texts(bob, cid, "kill-")
            bob2 = await connect(b, since=cursor)  # the gateway picks the live instance
            await bob2.wait(lambda f: f.get("type") == "message.created"
                            and f["data"].get("text") == "kill-29", timeout=30)
            await asyncio.sleep(0.3)
            assert before + texts(bob2, cid, "kill-") == [f"kill-{n}" for n in range(30)]
            await bob2.close()
            await alice.close()
        else:
            await bob.close()
        m = metrics()
        assert m['gateway_ws_closed_total{by="upstream_gone"}'] >= 1
    try:
        asyncio.run(go())
    finally:
        for s in sockets:
            if s.proc.poll() is not None:
                s.start()
