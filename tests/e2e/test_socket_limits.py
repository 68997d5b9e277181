"""The socket service's per-connection limits as a client meets them: the frame rate cap
(rejected, then close 1008), a client too slow to drain its send queue (close 4003, then resume
with its cursor), an access token that expires while connected (close 4001), a dead peer that
answers no ping (dropped after IDLE_TIMEOUT_S), and SIGTERM (every connection closed with 1001,
the process exits 0, clients resume on another instance without a gap). One instance with
tight limits, one to drain, real clients, the real messaging service, Kafka and Redis."""

import asyncio
import json
import re
import signal
import socket as pysocket
import struct
import time

import jwt as pyjwt
import pytest
import requests

from chat import create, ok, send
from conftest import KEYS, token_for
from socket_util import Client, HTTP_PORTS, WS_PORTS, raw_connect, read_frames, socket_instance

TIGHT = 2  # the index of the tight instance in socket_util's port tables
DRAIN = 3


def check_log(s):
    text = s.log_path.read_text(errors="replace")
    assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text[-3000:]


@pytest.fixture(scope="module")
def tight(platform):
    # Pings rarely here: a reader stalled on purpose must not be dropped as dead first.
    s = socket_instance(TIGHT, RATE_PER_S="5", QUEUE_FRAMES="64", QUEUE_BYTES="65536",
                        SNDBUF_BYTES="16384", PING_S="60", IDLE_TIMEOUT_S="120")
    s.start()
    try:
        yield s
    finally:
        code = s.stop()
        check_log(s)
        assert code == 0, code


def run(coro):
    return asyncio.run(coro)


def metric(i, name):
    text = requests.get(f"http://127.0.0.1:{HTTP_PORTS[i]}/metrics", timeout=5).text
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def masked(payload, opcode=1):
    mask = b"\x05\x06\x07\x08"
    n = len(payload)
    hdr = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else \
        bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def short_token(tenant_id, user, ttl_s):
    """An access token that expires in `ttl_s` seconds, signed as the user service signs (its
    token endpoint issues at least 60 s)."""
    now = int(time.time())
    claims = {"sub": user, "tid": tenant_id, "sid": "short", "roles": ["member"],
              "iss": "chat-platform", "aud": "chat-api", "iat": now, "nbf": now,
              "exp": now + ttl_s}
    return pyjwt.encode(claims, (KEYS / "jwt-private.pem").read_bytes(), algorithm="RS256",
                        headers={"kid": "k1"})


def test_rate_cap_rejects_then_closes_with_1008(api, tenant, tight):
    """RATE_PER_S 5: within one second frames 1-5 are served, 6-20 rejected as retryable
    `rate-limited`, the 21st closes the connection with 1008. A client within the cap is
    never refused."""
    t = token_for(api, tenant, "rater")

    async def go():
        calm = await Client.connect(TIGHT, t)
        for n in range(8):  # 4 a second: always within the cap
            await calm.send(type="ping", id=f"c{n}")
            await calm.ack(f"c{n}", "accepted")
            await asyncio.sleep(0.25)
        assert not [f for f in calm.frames if f.get("status") == "rejected"]
        await calm.close()

        c = await Client.connect(TIGHT, t)
        await asyncio.sleep(1.1)  # a fresh one-second window
        for n in range(30):
            try:
                await c.send(type="ping", id=f"p{n}")
            except Exception:
                break
        await asyncio.wait_for(c.task, 10)
        assert c.closed == 1008
        status = {f["id"]: f["status"] for f in c.frames if f.get("type") == "ack"
                  and f["status"] != "pending"}
        assert [status.get(f"p{n}") for n in range(5)] == ["accepted"] * 5, status
        rejected = [f for f in c.frames if f.get("type") == "ack" and f["status"] == "rejected"]
        assert [f["id"] for f in rejected] == [f"p{n}" for n in range(5, 20)], status
        assert all(f["reason"] == "rate-limited" and f["retryable"] and f["problem"]["status"] == 429
                   and f["problem"]["type"] == "urn:chat:problem:rate-limited" for f in rejected)
    run(go())


class RawReader:
    """Parses server frames from a raw socket, as slowly as asked."""

    def __init__(self, s):
        self.s, self.buf, self.frames, self.close = s, b"", [], None

    def _parse(self):
        while len(self.buf) >= 2:
            op, n, off = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            if len(self.buf) < off + n:
                return
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            if op == 8:
                self.close = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            elif op == 1:
                self.frames.append(json.loads(payload))

    def until(self, pred, timeout=30.0, chunk=65536, pause=0.0):
        """Reads `chunk` bytes at a time, sleeping `pause` s between reads, until a parsed frame
        matches `pred` or the server closed; returns that frame or None."""
        deadline = time.time() + timeout
        self.s.settimeout(timeout)
        while True:
            for f in self.frames:
                if pred(f):
                    return f
            if self.close is not None:
                return None
            assert time.time() < deadline, f"no matching frame; got {self.frames[-2:]}"
            data = self.s.recv(chunk)
            if not data:
                return None
            self.buf += data
            self._parse()
            time.sleep(pause)

    def created(self, cid):
        return [f for f in self.frames if f.get("type") == "message.created"
                and f.get("conversation_id") == cid]


def test_server_close_waits_for_the_clients_close_frame(api, tenant, tight):
    """A server that hangs up right after its close frame, with the client's later frames still
    unread, makes the kernel answer with a reset, which can destroy the close frame before the
    client reads it (the client then sees 1006, not 1008). The server sends its close, drops
    what follows, waits for the client's close, and only then ends the connection: with a FIN,
    never a reset."""
    t = token_for(api, tenant, "closer")
    s = raw_connect(WS_PORTS[TIGHT], t)
    try:
        time.sleep(1.1)  # a fresh one-second window
        # 30 frames in one write: the 21st trips the cap while 9 are still unread.
        s.sendall(b"".join(masked(json.dumps({"type": "ping", "id": f"q{n}"}).encode())
                           for n in range(30)))
        frames, code = read_frames(s)
        assert code == 1008, (code, frames[-3:])
        assert len(frames) == 25, len(frames)  # 5 pongs and acks, 15 rejected, nothing after
        s.settimeout(1.0)
        try:
            early = s.recv(1)  # still open: the server waits for our close
        except pysocket.timeout:
            early = None
        assert early is None, early
        s.sendall(masked(struct.pack("!H", 1000), opcode=8))
        s.settimeout(5.0)
        assert s.recv(1) == b""  # a FIN: recv() raises ConnectionResetError on a reset
    finally:
        s.close()

    # A client that never answers is hung up on after the linger (2 s), not kept.
    s = raw_connect(WS_PORTS[TIGHT], t)
    try:
        time.sleep(1.1)
        s.sendall(b"".join(masked(json.dumps({"type": "ping", "id": f"r{n}"}).encode())
                           for n in range(21)))
        frames, code = read_frames(s)
        assert code == 1008
        t0 = time.monotonic()
        s.settimeout(10.0)
        assert s.recv(1) == b""
        assert 1.0 < time.monotonic() - t0 < 6.0
    finally:
        s.close()


def test_slow_consumer_catch_up_is_paced_and_live_overflow_closes_with_4003(api, tenant, tight):
    """QUEUE_BYTES 64 KiB, SNDBUF_BYTES 16 KiB. A reader that resumes 150 KB of history slowly (4 KB every 10 ms)
    gets all of it: catch-up pages wait for the send queue to drain instead of overflowing
    it. The same client then stops reading while messages keep coming live: the server keeps
    at most QUEUE_BYTES for it and closes with 4003 instead of growing. Every frame before the
    close is whole and in order, and reconnecting with the cursor of the last one read gets
    the rest, once each."""
    a, b, c = (token_for(api, tenant, n) for n in ("sa", "sb", "sc"))
    cid = create(api, a, "group", ["sb", "sc"], title="slow")["id"]

    async def start_cursor():
        # Bob's cursor before the first message: resuming from it writes them all.
        cl = await Client.connect(TIGHT, b)
        await cl.send(type="sync", id="s")
        acc = await cl.ack("s", "accepted")
        await cl.close()
        return acc["cursor"]
    cursor0 = run(start_cursor())
    pad = "x" * 4900
    for n in range(30):
        ok(send(api, a, cid, f"slow-{n} " + pad))
    before = metric(TIGHT, "socket_slow_consumers_total")

    s = raw_connect(WS_PORTS[TIGHT], b, since=cursor0, rcvbuf=4096)
    r = RawReader(s)
    r.until(lambda f: f.get("type") == "message.created" and f["data"]["seq"] == 30,
            chunk=4096, pause=0.01)
    assert [f["data"]["seq"] for f in r.created(cid)] == list(range(1, 31))
    assert r.close is None and metric(TIGHT, "socket_slow_consumers_total") == before
    # Live now (a message sent after the catch-up arrives), then Bob stops reading.
    ok(send(api, c, cid, "live-0"))
    r.until(lambda f: f.get("type") == "message.created" and f["data"]["text"] == "live-0")
    sent = 1
    while metric(TIGHT, "socket_slow_consumers_total") == before:
        assert sent < 55, "the slow client was never closed"
        ok(send(api, c, cid, f"live-{sent} " + pad))
        sent += 1
    r.until(lambda f: False)
    s.close()
    assert r.close == 4003, r.close
    got = r.created(cid)
    seqs = [f["data"]["seq"] for f in got]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert len(seqs) < 30 + sent  # the rest never reached it
    cursor = [f for f in r.frames if "cursor" in f][-1]["cursor"]

    async def resume():
        cl = await Client.connect(TIGHT, b, since=cursor)
        await cl.wait(lambda f: f.get("type") == "message.created"
                      and f["data"]["text"].startswith(f"live-{sent - 1} "), timeout=20)
        await asyncio.sleep(0.3)
        out = [f["data"]["seq"] for f in cl.events(cid=cid)]
        await cl.close()
        return out
    assert run(resume()) == list(range(seqs[-1] + 1, 30 + sent + 1))


def test_expired_token_closes_with_4001(api, tenant, tight):
    t = short_token(tenant["id"], "shorty", 3)

    async def go():
        c = await Client.connect(TIGHT, t)
        await c.send(type="ping", id="p")
        await c.ack("p", "accepted")
        t0 = time.monotonic()
        await asyncio.wait_for(c.task, 15)
        assert c.closed == 4001 and 1.0 < time.monotonic() - t0 < 6.0, c.closed
    run(go())


@pytest.fixture
def pinging(platform):
    s = socket_instance(DRAIN, PING_S="2", IDLE_TIMEOUT_S="8")
    s.start()
    try:
        yield s
    finally:
        code = s.stop()
        check_log(s)
        assert code == 0, code


def test_a_peer_that_answers_no_ping_is_dropped(api, tenant, pinging):
    """PING_S 2, IDLE_TIMEOUT_S 8: a client library answers pings and stays; a dead peer (a
    raw socket that never answers) gets pinged, then dropped."""
    t = token_for(api, tenant, "idler")

    async def alive():
        c = await Client.connect(DRAIN, t)
        await asyncio.sleep(10)
        assert c.closed is None
        await c.send(type="ping", id="still")
        await c.ack("still", "accepted")
        await c.close()
    s = raw_connect(WS_PORTS[DRAIN], t)
    t0 = time.monotonic()
    run(alive())
    frames, code = read_frames(s, timeout=10)
    s.close()
    assert 9 in [op for op, _ in frames], frames  # it was pinged
    assert code != "timeout" and time.monotonic() - t0 < 14, code  # and hung up on


def test_sigterm_closes_with_1001_and_clients_resume_elsewhere(api, tenant, platform):
    """SIGTERM: every connection gets close 1001 (reconnect with the cursor), the process
    exits 0 within DRAIN_MS, and a client that resumes on another instance misses nothing sent
    meanwhile."""
    a, b = token_for(api, tenant, "da"), token_for(api, tenant, "db")
    cid = create(api, a, "direct", ["db"])["id"]
    drain = socket_instance(DRAIN, DRAIN_MS="3000")
    drain.start()
    other = socket_instance(0)  # test_socket's first instance's ports: free by now
    other.start()
    try:
        async def go():
            bob = await Client.connect(DRAIN, b)
            for n in range(40):  # until this instance's consumer delivers live
                ok(send(api, a, cid, f"warm-{n}"))
                try:
                    await bob.wait(lambda f: f.get("type") == "message.created", timeout=1.0)
                    break
                except AssertionError:
                    continue
            cursor = bob.cursor()
            t0 = time.monotonic()
            drain.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bob.task, 10)
            assert bob.closed == 1001, bob.closed
            assert bob.ws.close_reason.startswith("going away"), bob.ws.close_reason
            assert await asyncio.to_thread(drain.proc.wait, 10) == 0
            assert time.monotonic() - t0 < 5
            cursor = bob.cursor() or cursor
            for n in range(5):
                ok(send(api, a, cid, f"after-{n}"))
            bob2 = await Client.connect(0, b, since=cursor)
            await bob2.wait(lambda f: f.get("type") == "message.created"
                            and f["data"]["text"] == "after-4")
            await asyncio.sleep(0.3)
            texts = [f["data"]["text"] for f in bob2.events(cid=cid)]
            assert texts[-5:] == [f"after-{n}" for n in range(5)] and \
                len(texts) == len(set(texts)), texts
            await bob2.close()
        run(go())
    finally:
        drain.stop()
        assert other.stop() == 0
        check_log(drain)
        check_log(other)
