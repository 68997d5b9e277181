"""Socket benchmark (make bench): our socket service next to uWebSockets.js and Socket.IO 4 on
Node (bench/socket_peers.js), in one run, with identical clients and payloads.

Every server is pinned to core 0 (taskset); this load generator and the messaging service our
socket calls on connect to core 1. The Kafka broker is the bench's own (bench/kafka_broker.sh,
started for the run, not pinned, as the shared stack's is not; BENCH_KAFKA=shared uses the
local stack's 9092): a fresh broker that no other work on the machine uses. FerretDB and Redis
are the shared local stack and are not pinned.

- Fan-out (the delivery leg). Ours: the generator produces message.created events to the
  `messages` topic (the next eseq of each conversation, as the messaging service would) and
  the socket service writes them to its connections of the members. Peers: the generator
  sends each event on a publisher connection and the peer broadcasts it to an in-memory room.
  1,000 clients in 200 conversations of 5, then one group of 1,000; delivered frames per
  second from the moment every event is published to the last frame received, every event
  published at once (its bytes built before the clock starts, so the generator's JSON and
  masking do not set the pace). For the peers that moment is the publisher's write (about a
  millisecond); ours is held (SIGSTOP) while the generator produces every record and waits
  for the broker's acks, and released as the clock starts (BENCH_HOLD, 1; see `fanout`),
  and the server's CPU time per delivered frame (every thread, from /proc: on a machine shared
  with other work the wall-clock rate moves with that work, the CPU per frame much less).
- Latency: open loop at half of Socket.IO's rooms-of-5 event rate; p50/p99 from publish to
  receipt (the event carries its publish time), after BENCH_LATENCY_WARM_S (2) unmeasured
  seconds at that rate (their p99 is printed too). For ours also the stages of
  socket_delivery_stage_seconds (its /metrics) and the generator's produce -> delivery report read
  time. Then the Kafka hop alone at that rate (the
  same producer settings, a plain consumer pinned to the servers' core): the floor under
  ours's figures, which the peers' in-process publish does not pay.
- End to end (ours only): message.send over the WebSocket -> accepted and stored by the real
  messaging service (FerretDB) -> delivered to the other members; accepted messages per
  second and p50/p95/p99 send-to-delivery (p95: the seeds ask under 2 s at 100/s).
- Memory: BENCH_IDLE (1,000; the issue's figure is 10,000) idle connections (ours
  authenticated, each having loaded its conversations and caught up: two calls to the
  messaging service, answered by bench/messaging_standin.py in an idle-only run, see
  BENCH_IDLE_MESSAGING); RSS growth per connection.

Figures are printed absolute and as ratios to each peer. Knobs: BENCH_PORT_BASE (23280),
BENCH_EVENTS (20000 events in the rooms-of-5 run), BENCH_BROADCASTS (200), BENCH_IDLE (1000),
BENCH_E2E_RATE (100 messages/s; several comma-separated), BENCH_E2E_SECONDS (5), BENCH_CLIENTS
(1000), BENCH_WINDOW (0: every event at once), BENCH_PARTS (fanout,e2e,idle: a subset runs
only those), BENCH_IDLE_MESSAGING (standin: who answers the connect calls in an idle-only run),
BUILD_DIR (build/rel), BENCH_SOCKET_BIN (BUILD_DIR/bin/socket), BENCH_KAFKA (own, shared or
host:port), BENCH_HOP (1; 0 skips the Kafka hop run), BENCH_HOLD (1; 0 produces ours's
fan-out records inside the timed window, as before 2026-11-22), BENCH_SCAN (c: frames counted
by bench/ws_scan.c; py: in Python, as before 2026-11-22). Direction runs only:
BENCH_SERVERS (ours,uws,sio), BENCH_RATE (the latency rate, events/s), BENCH_GEN_LINGER_MS (the
generator's producer linger.ms, 5), BENCH_LATENCY_GAP_S
(ours idle that long before its latency run), BENCH_LOG_LEVEL (the services', warn).
"""

import ctypes
import json
import os
import pathlib
import re
import resource
import secrets
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
import pymongo
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("BUILD_DIR", "build/rel")
# Another socket binary (an earlier commit's, say) to measure instead of BUILD's: a before/after
# comparison is two runs, each with its own peers.
SOCKET_BIN = os.environ.get("BENCH_SOCKET_BIN", str(BUILD / "bin/socket"))
BASE = int(os.environ.get("BENCH_PORT_BASE", "23280"))
P_MSG, P_WS, P_HTTP, P_UWS, P_SIO = BASE, BASE + 1, BASE + 2, BASE + 3, BASE + 4
EVENTS = int(os.environ.get("BENCH_EVENTS", "20000"))
BROADCASTS = int(os.environ.get("BENCH_BROADCASTS", "200"))
IDLE = int(os.environ.get("BENCH_IDLE", "1000"))
E2E_RATES = [int(x) for x in os.environ.get("BENCH_E2E_RATE", "100").split(",") if x]
E2E_SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "5"))
PARTS = set(os.environ.get("BENCH_PARTS", "fanout,e2e,idle").split(","))
# Direction runs only: a subset of the servers (BENCH_SERVERS=ours) and a fixed latency rate in
# events/s (BENCH_RATE; by default half of Socket.IO's rooms-of-5 rate, measured in the run).
SERVERS = [n for n in ("ours", "uws", "sio")
           if n in os.environ.get("BENCH_SERVERS", "ours,uws,sio").split(",")]
RATE = float(os.environ.get("BENCH_RATE", "0"))
# Direction runs only: seconds ours sits idle before its latency run (in a full run it waits
# while the peers' fan-outs run, about a minute).
LATENCY_GAP = float(os.environ.get("BENCH_LATENCY_GAP_S", "0"))
WARM_S = float(os.environ.get("BENCH_LATENCY_WARM_S", "2"))  # unmeasured seconds before it
HOLD = os.environ.get("BENCH_HOLD", "1") == "1"  # ours held while its fan-out is produced
# Who answers the socket service's two calls per new connection in an idle-only run
# (BENCH_PARTS=idle): "standin" (bench/messaging_standin.py, the real service's answers for a
# user in no conversation, token verified) or "real" (the messaging service on the shared
# FerretDB: about 90 ms a call there, so 10,000 connections take over half an hour).
IDLE_MESSAGING = os.environ.get("BENCH_IDLE_MESSAGING", "standin")
CLIENTS, ROOM = int(os.environ.get("BENCH_CLIENTS", "1000")), 5
# Frames in flight at most (published x members - received); by default every event is
# published at once (a burst): each connection then has at most EVENTS / 200 frames (100) or
# BROADCASTS (200) pending, within every server's per-connection buffer (ours: QUEUE_FRAMES
# 4096; uWS: maxBackpressure 4 MiB; Socket.IO: unbounded), so nobody drops or closes.
WINDOW = int(os.environ.get("BENCH_WINDOW", "0")) or 1 << 62
# The broker the generator publishes to and ours (and the messaging service) use: BENCH_KAFKA
# "own" (the default) is one of the bench's own, started for the run by bench/kafka_broker.sh on
# BENCH_PORT_BASE + 10 (1 GiB heap, not pinned unless BENCH_KAFKA_CORE says so; bench/README.md,
# socket section, says why); "shared" is the local stack's 9092; anything else a host:port.
KAFKA_MODE = os.environ.get("BENCH_KAFKA", "own")
KAFKA_OWN_PORT = BASE + 10
KAFKA = {"own": f"127.0.0.1:{KAFKA_OWN_PORT}", "shared": "127.0.0.1:9092"}.get(KAFKA_MODE, KAFKA_MODE)
KAFKA_PIDFILE = ROOT / "build" / f"bench-kafka-{KAFKA_OWN_PORT}" / "pid"
RUN = secrets.token_hex(4)
PREFIX = f"bench-socket-{RUN}."
DB = f"bench_socket_{RUN}"
TENANT = str(uuid.uuid4())
LOGS = ROOT / "build" / "bench-logs"
KEYS = ROOT / ".local" / "keys"
NODE_MODULES = ROOT / ".local" / "bench" / "node_modules"
# Parsed once: PyJWT given the PEM parses (and checks) the RSA key on every call, 85 ms each
# here, which made 10,000 connections take a quarter of an hour of token signing alone.
PRIVATE = serialization.load_pem_private_key((KEYS / "jwt-private.pem").read_bytes(), password=None)
CURSOR_PAD = "A" * 24  # the peers' stand-in for our per-connection cursor
# The generator's Kafka producer (ours's publish, and the Kafka hop run) has the settings of
# libcommon's producer, the messaging service's, the real producer of `messages`: linger.ms 5
# (BENCH_GEN_LINGER_MS) and Nagle's algorithm off, idempotent, acks all. Until 2026-11-22 it
# published with linger.ms 0 ("publish now", as the peers' publisher connection does; 1 before
# that): each record its own produce request while the broker keeps up, and at the latency
# run's rate the hop's tail was longer than with 5 (bench/kafka_hop.py on the shared broker:
# with linger.ms 5 and Nagle off, p99 under 13 ms in 7 of 7 runs; 0 and 1 had tails of 78-160
# ms in 3 of 8). Nagle's algorithm held a small produce request back while an earlier one was
# unacknowledged (the hop's p99 62 and 148 ms with linger.ms 1 and Nagle, 3.1 ms without;
# bench/README.md, socket section, seventh figures).
GEN_PRODUCER = {"bootstrap.servers": KAFKA, "linger.ms": int(os.environ.get("BENCH_GEN_LINGER_MS", "5")),
                "socket.nagle.disable": True,
                "enable.idempotence": True, "acks": "all"}


def log(*a):
    print("bench-socket:", *a, flush=True)


def token(user, ttl=7200):
    now = int(time.time())
    return jwt.encode({"sub": user, "tid": TENANT, "sid": "bench-" + user, "roles": ["member"],
                       "iss": "chat-platform", "aud": "chat-api", "iat": now, "nbf": now,
                       "exp": now + ttl}, PRIVATE, algorithm="RS256", headers={"kid": "bench"})


# --- processes ------------------------------------------------------------------------------

PROCS = []


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(name, argv, env, core, ready, port):
    for _ in range(100):  # a previous run's process may still be draining
        if not port_open(port)():
            break
        time.sleep(0.2)
    else:
        sys.exit(f"bench-socket: port {port} is taken; set BENCH_PORT_BASE")
    LOGS.mkdir(parents=True, exist_ok=True)
    out = open(LOGS / f"{name}.log", "wb")
    p = subprocess.Popen(["taskset", "-c", str(core), *argv], env={**os.environ, **env},
                         stdout=out, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
    PROCS.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"bench-socket: {name} exited; see {LOGS / (name + '.log')}")
        if ready():
            return p
        time.sleep(0.1)
    sys.exit(f"bench-socket: {name} not ready; see {LOGS / (name + '.log')}")


def http_ready(port):
    def f():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2).status == 200
        except OSError:
            return False
    return f


def port_open(port):
    def f():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    return f


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_s(p):
    """CPU seconds (user + system, every thread) the server has used so far: a figure the other
    load on a shared machine does not inflate the way it does wall-clock rates."""
    if p is None:
        return 0.0
    f = open(f"/proc/{p if isinstance(p, int) else p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(p):
    """RSS of the server itself (the child of taskset, which execs: same pid)."""
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


SVC_ENV = {"KAFKA_BROKERS": KAFKA, "JWT_PUBLIC_KEY_FILE": "bench=" + str(KEYS / "jwt-public.pem"), "KAFKA_TOPIC_PREFIX": PREFIX,
           "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warn"), "MESSAGING_URL": f"http://127.0.0.1:{P_MSG}"}


def call(method, path, user, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{P_MSG}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token(user)}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:  # the shared FerretDB under load
        return json.loads(r.read() or b"null")


# --- a bare WebSocket client ------------------------------------------------------------------

def masked(payload, opcode=1):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 0xFE]) + struct.pack("!H", n)
    else:
        hdr = bytes([0x80 | opcode, 0xFF]) + struct.pack("!Q", n)
    m = int.from_bytes(mask * (n // 4 + 1), "big") >> (8 * (4 * (n // 4 + 1) - n))
    body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
    return hdr + mask + body


class Conn:
    __slots__ = ("sock", "buf", "n", "lat", "ctl")
    opened = 0

    def __init__(self, port, path, sio=False):
        # Source addresses 127.0.0.2-17 in turn: tens of thousands of connections (three servers'
        # idle runs, one after the other, with the earlier ones in TIME_WAIT) never run out of
        # ephemeral ports on one address.
        Conn.opened += 1
        s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                     source_address=(f"127.0.0.{2 + Conn.opened % 16}", 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError(f"closed during the upgrade of {path}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError(head.split(b"\r\n")[0].decode())
        self.sock, self.buf, self.n, self.lat, self.ctl = s, bytearray(head.split(b"\r\n\r\n", 1)[1]), 0, None, []
        if sio:
            self.sock.sendall(masked(b"40"))  # Engine.IO open is answered by a Socket.IO connect
        s.setblocking(False)

    def send(self, text):
        self.send_frame(masked(text.encode() if isinstance(text, str) else text))

    def send_frame(self, frame):
        """Sends a frame already built (masked)."""
        self.sock.settimeout(30)
        self.sock.sendall(frame)
        self.sock.setblocking(False)


class Load:
    """Clients on one epoll: counts frames that start with `marker`; samples latencies from
    the "ts" (ms since the epoch, a float) inside the frame when `lat` is set."""

    TS = re.compile(rb'(?:"ts":"?|ts=)([0-9.]+)')

    def __init__(self, marker):
        self.ep = select.epoll()
        self.by_fd = {}
        self.marker = marker
        self.total = 0
        self.lat = None
        self.keep_ctl = False
        self.scanned, self.ts_n = ctypes.c_long(), ctypes.c_long()
        self.ts = (ctypes.c_double * 4096)()  # publish times read by WS_SCAN in a latency run

    def add(self, c):
        self.by_fd[c.sock.fileno()] = c
        self.ep.register(c.sock.fileno(), select.EPOLLIN)

    def close(self):
        for c in self.by_fd.values():
            c.sock.close()
        self.ep.close()

    def pump(self, timeout=0.01):
        marker, mlen = self.marker, len(self.marker)
        for fd, _ in self.ep.poll(timeout):
            c = self.by_fd[fd]
            try:
                data = c.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise OSError("a server closed a client connection")
            buf = c.buf
            buf += data
            pos, end = 0, len(buf)
            now = time.time() * 1000 if self.lat is not None else 0
            ts = self.ts if self.lat is not None else None
            while end - pos >= 2:
                if WS_SCAN:  # the run of marker frames in C; the frame it stops at below
                    at = ctypes.c_char.from_buffer(buf)
                    pos = WS_SCAN(ctypes.addressof(at), pos, end, marker, mlen, ctypes.byref(self.scanned),
                                  ts, len(self.ts), ctypes.byref(self.ts_n))
                    del at  # the buffer's export, before it is resized
                    c.n += self.scanned.value
                    self.total += self.scanned.value
                    if ts is not None:
                        self.lat.extend(now - x for x in ts[:self.ts_n.value])
                    if end - pos < 2:
                        break
                b1 = buf[pos + 1] & 0x7F
                if b1 < 126:
                    hl, n = 2, b1
                elif b1 == 126:
                    if end - pos < 4:
                        break
                    hl, n = 4, (buf[pos + 2] << 8) | buf[pos + 3]
                else:
                    if end - pos < 10:
                        break
                    hl, n = 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
                if pos + hl + n > end:
                    break
                op = buf[pos] & 0x0F
                p = pos + hl
                if op == 1:
                    if buf[p:p + mlen] == marker:
                        c.n += 1
                        self.total += 1
                        if self.lat is not None:
                            m = self.TS.search(buf, p, p + n)
                            if m:
                                self.lat.append(now - float(m.group(1)))
                    elif self.keep_ctl:
                        c.ctl.append(bytes(buf[p:p + n]))
                elif op == 9:  # a ping: its pong (send() would wrap it in a text frame,
                    c.send_frame(masked(bytes(buf[p:p + n]), 10))  # which closed runs with 1007)
                elif op == 8:
                    code = (buf[p] << 8) | buf[p + 1] if n >= 2 else 1005
                    raise OSError(f"a server closed a client with {code}: {bytes(buf[p + 2:p + n])!r}")
                pos += hl + n
            del buf[:pos]

    def wait_ctl(self, conns, pred, timeout=600):
        """Pumps until every connection in `conns` received a control frame matching pred."""
        self.keep_ctl = True
        deadline = time.time() + timeout
        pending = set(id(c) for c in conns)
        while pending:
            if time.time() > deadline:
                raise OSError(f"{len(pending)} connections never got their answer")
            self.pump(0.05)
            for c in conns:
                if id(c) in pending and any(pred(f) for f in c.ctl):
                    pending.discard(id(c))
        for c in conns:
            c.ctl.clear()
        self.keep_ctl = False


def load_ws_scan():
    """bench/ws_scan.c's counter (BUILD/bench/libws_scan.so, built by `make bench-socket`), or
    None: then every frame is parsed in Python (the generator's pace then bounds the rooms-of-5
    runs at about 430-450k frames/s here, for every server). BENCH_SCAN=py forces Python."""
    path = BUILD / "bench" / "libws_scan.so"
    if not path.exists():
        log(f"{path} missing: counting frames in Python (make bench-socket builds it)")
        return None
    f = ctypes.CDLL(str(path)).ws_scan
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                  ctypes.POINTER(ctypes.c_long), ctypes.POINTER(ctypes.c_double), ctypes.c_long,
                  ctypes.POINTER(ctypes.c_long)]
    f.restype = ctypes.c_size_t
    return f


WS_SCAN = load_ws_scan() if os.environ.get("BENCH_SCAN", "c") == "c" else None


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# --- the three servers behind one interface ------------------------------------------------------

class Ours:
    name = "ours"
    marker = b'{"type":"message.created"'

    def __init__(self, convs, eseq):
        self.convs, self.eseq = convs, eseq  # conversation ids per room index; next eseq
        self.producer = Producer(GEN_PRODUCER)
        # When a list: each publish's produce() -> delivery report time, ms. librdkafka's
        # message latency is taken when the report is read (rd_clock() - enqueue time, in
        # rd_kafka_message_latency), here in the generator's loop: it includes the loop's delay
        # in polling, not only the broker's ack. The service's `kafka` stage (the record's
        # CreateTime -> its consumer) is the broker side.
        self.acks = None

    def _delivered(self, err, msg):
        if err is None and msg.latency() is not None:
            self.acks.append(msg.latency() * 1000)

    def connect(self, user, rooms):
        return Conn(P_WS, f"/v1/ws?access_token={token(user)}")

    def ready(self, load, conns):
        # A sync frame is acked once the connection's first catch-up is done: then it is live.
        for c in conns:
            c.send('{"type":"sync","id":"r"}')
        load.wait_ctl(conns, lambda f: f.startswith(b'{"type":"ack","id":"r","status":"accepted"'))

    def ready_done(self, load):
        pass

    def probe(self, load, members):
        """Publishes the next event of room 0 until it arrives: the consumer group may get its
        partition a moment after the service reports ready, and an event produced before
        that is never consumed (the group starts at the end). The same eseq again is the
        same position, so a late first copy is dropped as a duplicate."""
        cid = self.convs[0]
        for _ in range(30):
            before = load.total
            self.publish(0, message_body(0))
            self.producer.flush(5)
            deadline = time.time() + 1.0
            while time.time() < deadline and load.total - before < members:
                load.pump(0.01)
            if load.total - before >= members:
                return
            self.eseq[cid] -= 1
        raise OSError("the socket service never delivered the probe")

    def build(self, room, body):
        """The record of the next event of `room`: {"value", "key"} (produce_batch's form).
        Built events must be sent in the order built (each takes the conversation's next
        eseq)."""
        cid = self.convs[room]
        self.eseq[cid] += 1
        ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": "message.created",
              "source": "/messaging", "time": "2026-01-01T00:00:00.000Z", "subject": cid,
              "datacontenttype": "application/json", "tenant": TENANT, "eseq": self.eseq[cid],
              "data": dict(body, conversation_id=cid, seq=self.eseq[cid])}
        return {"value": json.dumps(ev, separators=(",", ":")).encode(), "key": cid}

    def send(self, built):
        value, cid = built["value"], built["key"]
        if self.acks is None:
            self.producer.produce(PREFIX + "messages", value, key=cid)
        else:
            self.producer.produce(PREFIX + "messages", value, key=cid, on_delivery=self._delivered)

    def send_many(self, built):
        """Built records, in order, in one call (librdkafka's produce batch): produce() per
        record cost the generator's core about 1.4-2.9 us of Python each, produce_batch
        0.85-1.0 (a direction run, 20,000 records)."""
        n = self.producer.produce_batch(PREFIX + "messages", built)
        if n != len(built):
            raise OSError(f"the generator's producer queued {n} of {len(built)} records")

    def publish(self, room, body):
        self.send(self.build(room, body))

    def flush(self):
        self.producer.poll(0)


class Peer:
    def __init__(self, kind, port):
        self.name, self.port, self.sio = kind, port, kind == "sio"
        self.marker = b'42["event",{"type":"message.created"' if self.sio else b'{"type":"message.created"'
        self.pub = None
        self.out = []

    def connect(self, user, rooms):
        q = "rooms=" + ",".join(f"r{r}" for r in rooms)
        path = f"/socket.io/?EIO=4&transport=websocket&{q}" if self.sio else f"/?{q}"
        return Conn(self.port, path, self.sio)

    def ready(self, load, conns):
        if self.sio:  # the Socket.IO connect answer (40{"sid":...}) means joined
            load.wait_ctl(conns, lambda f: f.startswith(b"40"))

    def ready_done(self, load):
        time.sleep(0.2)
        load.pump(0)
        if self.pub:
            self.pub.sock.close()
        path = ("/socket.io/?EIO=4&transport=websocket&publisher=1" if self.sio
                else "/?publisher=1")
        self.pub = Conn(self.port, path, self.sio)
        time.sleep(0.1)

    def build(self, room, body):
        """The publisher's masked frame of one event of `room`."""
        ev = {"type": "message.created", "event_id": str(uuid.uuid4()), "conversation_id": f"r{room}",
              "eseq": 1, "time": "2026-01-01T00:00:00.000Z", "data": dict(body, seq=1),
              "cursor": CURSOR_PAD}
        if self.sio:
            return masked(b'42' + json.dumps(["pub", f"r{room}", ev], separators=(",", ":")).encode())
        return masked(f"r{room}\n".encode() + json.dumps(ev, separators=(",", ":")).encode())

    def send(self, built):
        self.out.append(built)

    def send_many(self, built):
        self.out.extend(built)

    def publish(self, room, body):
        self.send(self.build(room, body))

    def flush(self):
        if self.out:
            self.pub.sock.settimeout(30)
            self.pub.sock.sendall(b"".join(self.out))
            self.pub.sock.setblocking(False)
            self.out.clear()


def message_body(i):
    """The data of a message.created as the messaging service writes it
    (proto/events/message.created.schema.json: ids, seq, strings; no fractional numbers), plus
    "ts", the publish time for the latency figures, as a string: a float there (as before
    2026-11-22) cost ours about 8% of its fan-out CPU in cJSON's printing of a fractional
    number (sprintf, then sscanf to check the round trip), which no real event carries; the
    peers pass the bytes through either way."""
    return {"id": f"00000000-0000-4000-8000-{i:012d}", "sender_id": "u0000", "type": "text",
            "text": "hello, this is a benchmark message of ordinary length",
            "client_msg_id": f"bench-{i}", "created_at": "2026-01-01T00:00:00.000Z",
            "ts": f"{time.time() * 1000:.3f}"}


def fanout(srv, load, rooms_of, n_events, per_event, rate=None, proc=None):
    """Publishes n_events round-robin over the rooms; returns (frames/s, latencies ms), and
    when `proc` is given the server's CPU microseconds per delivered frame as a third value.
    Closed loop (at most WINDOW frames in flight) or open loop at `rate` events/s.

    Closed loop, every event's bytes (ours: the Kafka record; the peers: the publisher's masked
    frame) are built before the clock starts: building them in the loop (JSON, masking) made
    the rooms-of-5 run the generator's pace, not the servers' (2026-11-22: publishing 60,000
    events took 2.07-2.16 s of the 2.5 s run for ours and uWebSockets.js alike). Open loop (the
    latency runs) builds each when due, so it carries its publish time.

    A measured closed-loop run of ours (`proc` given, no WINDOW, BENCH_HOLD 1) holds the
    server (SIGSTOP) while the records are produced and acknowledged, and starts the clock as
    it releases it (SIGCONT): the window is the delivery leg (the topic to the connections),
    as the peers' is (their publisher's socket to the connections). Produced inside the
    window, the records cost the generator's core (where the frames are also received) about
    140 ms of 480 in a rooms-of-5 run, time the peers' one write of prebuilt frames (about
    1 ms) does not take (2026-11-22, a timeline of frames received). The CPU figures still
    count the production: their baselines are read before it."""
    global FEED_CPU
    start_total = load.total
    expect = n_events * per_event
    load.lat = [] if rate else None
    built = [] if rate else [srv.build(rooms_of[i % len(rooms_of)], message_body(i))
                             for i in range(n_events)]
    cpu0, gen0, broker0 = cpu_s(proc), sum(os.times()[:2]), cpu_s(BROKER)
    sent = 0
    if HOLD and isinstance(srv, Ours) and not rate and WINDOW == 1 << 62 and proc is not None:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            srv.send_many(built)
            if srv.producer.flush(30) != 0:
                raise OSError("the generator's records were not all acknowledged in 30 s")
        finally:
            t0 = time.time()
            os.kill(proc.pid, signal.SIGCONT)
        sent = n_events
    else:
        t0 = time.time()
    while load.total - start_total < expect:
        if rate:
            due = min(n_events, int((time.time() - t0) * rate) + 1)
            while sent < due:
                srv.publish(rooms_of[sent % len(rooms_of)], message_body(sent))
                sent += 1
        else:
            while sent < n_events and sent * per_event - (load.total - start_total) < WINDOW:
                srv.send_many(built[sent:sent + 100])
                sent = min(n_events, sent + 100)
        srv.flush()
        load.pump(0.001)
        if time.time() - t0 > 300:
            raise OSError(f"{srv.name}: {load.total - start_total} of {expect} frames after 300 s")
    dt = time.time() - t0
    lat, load.lat = load.lat, None
    # The feed's CPU per frame: this generator (every thread: its Kafka producer's too) and our
    # own broker (nan on the shared one, which other work uses too).
    FEED_CPU = ((sum(os.times()[:2]) - gen0) * 1e6 / expect,
                (cpu_s(BROKER) - broker0) * 1e6 / expect if BROKER else float("nan"))
    if proc is not None:
        return expect / dt, lat, (cpu_s(proc) - cpu0) * 1e6 / expect
    return expect / dt, lat


def setup_conversations():
    """200 groups of 5 (u0000-u0004, ...) and one group of all 1,000, in the real messaging
    service; returns (room -> conversation id, the broadcast group's id, next eseq by id)."""
    rooms = {}
    for r in range(CLIENTS // ROOM):
        users = [f"u{r * ROOM + k:04d}" for k in range(ROOM)]
        rooms[r] = call("POST", "/v1/conversations", users[0],
                        {"type": "group", "members": users[1:], "title": f"room {r}"})["id"]
    # The end-to-end run's conversations (same members), never given synthetic events: real
    # messages there get the eseq the connections expect.
    e2e = {}
    for r in range(CLIENTS // ROOM):
        users = [f"u{r * ROOM + k:04d}" for k in range(ROOM)]
        e2e[r] = call("POST", "/v1/conversations", users[0],
                      {"type": "group", "members": users[1:], "title": f"e2e {r}"})["id"]
    everyone = [f"u{k:04d}" for k in range(CLIENTS)]
    big = call("POST", "/v1/conversations", everyone[0],
               {"type": "group", "members": everyone[1:100], "title": "everyone"})["id"]
    for k in range(100, CLIENTS, 100):
        call("POST", f"/v1/conversations/{big}/members", everyone[0], {"user_ids": everyone[k:k + 100]})
    # The positions the socket's "now" catch-up will report: the last eseq of each log.
    ids = set(rooms.values()) | set(e2e.values()) | {big}
    eseq = {cid: 0 for cid in ids}
    cons = Consumer({"bootstrap.servers": KAFKA, "group.id": f"bench-socket-{RUN}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    cons.subscribe([PREFIX + "conversations", PREFIX + "messages"])
    idle_since, deadline = None, time.time() + 60
    while (idle_since is None or time.time() - idle_since < 3) and time.time() < deadline:
        m = cons.poll(0.5)
        if m is None or m.error():
            continue
        idle_since = time.time()
        ev = json.loads(m.value())
        cid = m.key().decode()
        if cid in eseq:
            eseq[cid] = max(eseq[cid], ev.get("eseq", 0))
    cons.close()
    missing = [c for c, e in eseq.items() if e == 0]
    if missing:
        raise OSError(f"no events seen for {len(missing)} conversations")
    return rooms, big, eseq, e2e


def run_fanout(srv, proc, rooms_ids=None):
    """Connects the 1,000 clients (each in its room of 5 and in the group of 1,000) and runs
    both fan-outs; returns {"rooms": frames/s, "broadcast": frames/s}."""
    load = Load(srv.marker)
    conns = []
    for u in range(0, CLIENTS, 100):  # in waves: ours loads each user's conversations
        wave = [srv.connect(f"u{k:04d}", [k // ROOM, "all"]) for k in range(u, min(CLIENTS, u + 100))]
        for c in wave:
            load.add(c)
        srv.ready(load, wave)
        conns += wave
        log(f"{srv.name}: {len(conns)} clients live")
    srv.ready_done(load)
    if isinstance(srv, Ours):
        srv.probe(load, ROOM)
    room_list = list(range(CLIENTS // ROOM))
    fanout(srv, load, room_list, int(os.environ.get("BENCH_WARM_EVENTS", "1000")), ROOM)  # warm-up
    rooms_fps, _, rooms_cpu = fanout(srv, load, room_list, EVENTS, ROOM, proc=proc)
    rooms_feed = FEED_CPU
    bcast_fps, _, bcast_cpu = fanout(srv, load, ["all"], BROADCASTS, CLIENTS, proc=proc)
    out = {"rooms": rooms_fps, "broadcast": bcast_fps, "rooms_cpu": rooms_cpu,
           "broadcast_cpu": bcast_cpu, "rooms_gen_cpu": rooms_feed[0], "rooms_broker_cpu": rooms_feed[1],
           "load": load, "conns": conns}
    return out


def run_latency(srv, load, rate, seconds=5.0):
    n = int(rate * seconds)
    _, lat = fanout(srv, load, list(range(CLIENTS // ROOM)), n, ROOM, rate=rate)
    return pct(lat, 0.5), pct(lat, 0.99)


STAGE_RE = re.compile(rb'^socket_delivery_stage_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\d+)$', re.M)


def stage_buckets():
    """Ours's socket_delivery_stage_seconds buckets from /metrics: {stage: [(le, cumulative)]}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{P_HTTP}/metrics", timeout=10) as r:
        text = r.read()
    out = {}
    for stage, le, n in STAGE_RE.findall(text):
        out.setdefault(stage.decode(), []).append((float(le), int(n)))
    return out


def stage_quantiles(before, after):
    """Per stage, the count and the bucket bounds (ms) holding the median and the 99th
    percentile of what was recorded between two stage_buckets() scrapes."""
    res = {}
    for stage, rows in after.items():
        prev = dict(before.get(stage, []))
        diff = [(le, n - prev.get(le, 0)) for le, n in rows]
        total = diff[-1][1] if diff else 0
        q = []
        for frac in (0.5, 0.99):
            q.append(next((le * 1000 for le, n in diff if n >= frac * total), float("nan")) if total else float("nan"))
        res[stage] = (total, *q)
    return res


def _hop_consumer(topic, out, ready):
    """The Kafka hop's far end (run_kafka_hop): a plain consumer pinned to core 0, like the
    servers, recording receipt time minus the publish time each record carries."""
    os.sched_setaffinity(0, {0})
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": topic, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    lat = []
    while True:
        m = c.poll(0.2)
        if m is None:
            if c.assignment():
                ready.set()
            continue
        if m.error():
            continue
        if m.value() == b"end":
            break
        if m.value() != b"warm":
            lat.append(time.time() * 1000 - float(m.value()))
    c.close()
    out.put(lat)


def run_kafka_hop(rate, seconds=5.0):
    """The Kafka hop alone at `rate` records/s, produced as the fan-out's events are (same
    producer settings) and consumed by a plain consumer on the servers' core: the floor under
    ours's delivery latency, which the peers (an in-process publish) do not have. Returns
    (p50, p99) ms."""
    import multiprocessing as mp
    topic = PREFIX + "hop"
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        f.result()
    ctx = mp.get_context("spawn")  # not fork: this process runs librdkafka threads
    out, ready = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_hop_consumer, args=(topic, out, ready))
    p.start()
    prod = Producer(GEN_PRODUCER)
    acks = []  # produce() -> broker ack, ms: the producer's share of the hop
    try:
        deadline = time.time() + 60
        while not ready.is_set() and time.time() < deadline:  # records before the assignment
            prod.produce(topic, b"warm")  # are read too (earliest), but not timed
            prod.poll(0.1)
        n, sent, t0 = int(rate * seconds), 0, time.time()
        while sent < n:
            due = min(n, int((time.time() - t0) * rate) + 1)
            while sent < due:
                prod.produce(topic, f"{time.time() * 1000:.3f}".encode(),
                             on_delivery=lambda err, m: err is None and m.latency() is not None
                             and acks.append(m.latency() * 1000))
                sent += 1
            prod.poll(0)
            time.sleep(0.001)
        prod.produce(topic, b"end")
        prod.flush(30)
        lat = out.get(timeout=120)
    finally:
        p.join(30)
        admin.delete_topics([topic])
    return pct(lat, 0.5), pct(lat, 0.99), pct(acks, 0.5), pct(acks, 0.99)


def run_idle(srv, proc, n):
    """Connects n idle clients (no conversation) and returns the RSS growth per connection."""
    load = Load(b"\x00never")
    time.sleep(0.5)
    before = rss_kib(proc)
    t0 = time.time()
    for u in range(0, n, 500):
        wave = [srv.connect(f"idle{k:05d}", []) for k in range(u, min(n, u + 500))]
        for c in wave:
            load.add(c)
        srv.ready(load, wave)
        if (u // 500) % 4 == 3:
            log(f"{srv.name}: {u + len(wave):,} idle connections live")
    srv.ready_done(load)
    log(f"{srv.name}: {n:,} connections open and live in {time.time() - t0:.1f} s")
    time.sleep(1.0)
    load.pump(0)
    after = rss_kib(proc)
    load.close()
    return (after - before) * 1024 / n


def run_e2e(load, conns, rooms, rate, seconds):
    """message.send over the sockets at `rate` messages/s (open loop, round-robin over the
    rooms' first members); returns (accepted/s, p50, p95, p99 send->delivered at a member,
    delivered, sent). p95 is the seeds' figure (under 2 s at 100 messages/s)."""
    n = int(rate * seconds)
    load.marker = b'{"type":"message.created"'
    load.lat = []
    start_total = load.total
    t0 = time.time()
    sent = 0
    while True:
        due = min(n, int((time.time() - t0) * rate) + 1)
        while sent < due:
            r = sent % (CLIENTS // ROOM)
            body = {"type": "message.send", "conversation_id": rooms[r],
                    "text": f"bench ts={time.time() * 1000:.3f}", "client_msg_id": f"e{RUN}{rate}-{sent}"}
            conns[r * ROOM].send(json.dumps(body))
            sent += 1
        load.pump(0.001)
        if load.total - start_total >= n * ROOM or time.time() - t0 > seconds + 60:
            break
    dt = time.time() - t0
    lat = load.lat
    load.lat = None
    delivered = (load.total - start_total) / ROOM
    return delivered / dt, pct(lat, 0.5), pct(lat, 0.95), pct(lat, 0.99), delivered, n


FEED_CPU = (float("nan"), float("nan"))  # fanout(): the last run's generator and broker CPU/frame
BROKER = 0  # our own broker's pid (BENCH_KAFKA=own), for its CPU time


def main():
    # SIGTERM and SIGINT end the run through the finally below (topics and database dropped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    os.sched_setaffinity(0, {1})
    raise_nofile()
    global LOAD0
    LOAD0 = os.getloadavg()
    for mod in ("socket.io", "@trufflesuite/uws-js-unofficial"):
        if not (NODE_MODULES / mod).exists():
            log(f"installing the peers (socket.io 4.8.1, @trufflesuite/uws-js-unofficial 20.30.0-unofficial.0) into .local/bench")
            NODE_MODULES.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has none
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                            "socket.io@4.8.1", "@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"],
                           cwd=NODE_MODULES.parent, check=True)
            break
    global BROKER
    own_broker = KAFKA_MODE == "own" and not port_open(KAFKA_OWN_PORT)()
    if KAFKA_MODE == "own":  # started for this run unless one is up already (a direction loop)
        if own_broker:
            subprocess.run(["bash", str(ROOT / "bench/kafka_broker.sh"), "start"], check=True,
                           env={**os.environ, "BENCH_KAFKA_PORT": str(KAFKA_OWN_PORT)})
        BROKER = int(KAFKA_PIDFILE.read_text())
    elif KAFKA_MODE == "shared" and (ROOT / ".local/run/kafka.pid").exists():
        BROKER = int((ROOT / ".local/run/kafka.pid").read_text())  # deploy/stack.sh's (its CPU
        # then counts whatever else uses the shared broker meanwhile)
    admin = AdminClient({"bootstrap.servers": KAFKA})
    topics = [PREFIX + t for t in ("messages", "conversations", "users", "notifications")]
    for f in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
        f.result()
    results = {}
    try:
        if PARTS == {"idle"} and IDLE_MESSAGING == "standin":
            start("messaging-standin", [sys.executable, str(ROOT / "bench/messaging_standin.py"), str(P_MSG),
                                        str(KEYS / "jwt-public.pem")], {}, 1, http_ready(P_MSG), P_MSG)
        else:
            start("messaging", [str(BUILD / "bin/messaging")],
                  {**SVC_ENV, "HTTP_PORT": str(P_MSG), "MONGO_DB": DB, "SEND_RATE_PER_MIN": "0",
                   "HTTP_THREADS": "8", "USERS_CONSUMER_GROUP": f"bench-socket-users-{RUN}"},
                  1, http_ready(P_MSG), P_MSG)
        rooms, big, eseq, e2e_rooms = {}, None, {}, {}
        if PARTS & {"fanout", "e2e"}:
            rooms, big, eseq, e2e_rooms = setup_conversations()
            log(f"{len(rooms)} conversations of {ROOM} and one of {CLIENTS} in the messaging service")

        ours_env = {**SVC_ENV, "WS_PORT": str(P_WS), "HTTP_PORT": str(P_HTTP),
                    "CONNECTIONS_PER_USER": "10000", "RATE_PER_S": "100000",
                    "PING_S": "600", "IDLE_TIMEOUT_S": "1200", "UPSTREAM_THREADS": "16",
                    "UPSTREAM_TIMEOUT_MS": "60000", "PRESENCE_BATCH_MS": "60000",
                    "KAFKA_GROUP_PREFIX": f"bench-socket-{RUN}"}
        rooms_of = dict(rooms)
        rooms_of["all"] = big
        peers = [("ours", lambda: start("socket", [SOCKET_BIN], ours_env, 0, http_ready(P_HTTP), P_WS),
                  lambda: Ours(rooms_of, eseq)),
                 ("uws", lambda: start("uws", ["node", str(ROOT / "bench/socket_peers.js"), "uws", str(P_UWS)],
                                       {"NODE_PATH": str(NODE_MODULES)}, 0, port_open(P_UWS), P_UWS),
                  lambda: Peer("uws", P_UWS)),
                 ("sio", lambda: start("sio", ["node", str(ROOT / "bench/socket_peers.js"), "sio", str(P_SIO)],
                                       {"NODE_PATH": str(NODE_MODULES)}, 0, port_open(P_SIO), P_SIO),
                  lambda: Peer("sio", P_SIO))]
        fan = {}
        nan = float("nan")
        for name, launch, make in peers:
            if name not in SERVERS:
                fan[name] = {"rooms": nan, "broadcast": nan, "rooms_cpu": nan, "broadcast_cpu": nan,
                             "rooms_gen_cpu": nan, "rooms_broker_cpu": nan,
                             "p50": nan, "p99": nan, "idle": nan, "load": Load(b"-"), "srv": None,
                             "proc": None}
                continue
            proc = launch()
            srv = make()
            if "fanout" in PARTS or "e2e" in PARTS:
                fan[name] = run_fanout(srv, proc)
                log(f"{name}: fan-out rooms of {ROOM}: {fan[name]['rooms']:,.0f} frames/s "
                    f"({fan[name]['rooms_cpu']:.2f} CPU us/frame), group of {CLIENTS}: "
                    f"{fan[name]['broadcast']:,.0f} frames/s ({fan[name]['broadcast_cpu']:.2f} CPU us/frame); "
                    f"the rooms' feed: generator {fan[name]['rooms_gen_cpu']:.2f}, broker "
                    f"{fan[name]['rooms_broker_cpu']:.2f} CPU us/frame")
            else:
                fan[name] = {"rooms": nan, "broadcast": nan, "rooms_cpu": nan, "broadcast_cpu": nan,
                             "rooms_gen_cpu": nan, "rooms_broker_cpu": nan,
                             "load": Load(b"-")}
            fan[name]["srv"], fan[name]["proc"] = srv, proc
        # Latency at half of Socket.IO's saturation (events/s of the rooms run), same rate for all.
        rate = RATE or fan["sio"]["rooms"] / ROOM / 2
        stages, produce_ack = {}, (nan, nan)
        for name in SERVERS:
            f = fan[name]
            if name == "ours" and LATENCY_GAP:
                time.sleep(LATENCY_GAP)
            # BENCH_LATENCY_WARM_S (2) seconds at the same rate first, not in the figures: each
            # server has sat idle while the others ran, and ours's p99 was then the first half
            # second after that minute (the generator's produce -> broker ack p99 142 ms there,
            # 4 ms in the Kafka hop run a minute later; bench/README.md, sixth figures). Its p99
            # is printed beside.
            f["cold_p99"] = run_latency(f["srv"], f["load"], rate, WARM_S)[1] if "fanout" in PARTS else nan
            log(f"{name}: warm-up at {rate:,.0f} events/s: p99 {f['cold_p99']:.2f} ms (not counted)")
            before = stage_buckets() if name == "ours" and "fanout" in PARTS else None
            if before is not None:
                f["srv"].acks = []
            f["p50"], f["p99"] = run_latency(f["srv"], f["load"], rate) if "fanout" in PARTS else (nan, nan)
            log(f"{name}: latency at {rate:,.0f} events/s ({rate * ROOM:,.0f} frames/s): "
                f"p50 {f['p50']:.2f} ms, p99 {f['p99']:.2f} ms")
            if before is not None:  # where ours's time went (socket_delivery_stage_seconds)
                f["srv"].producer.flush(30)
                acks, f["srv"].acks = f["srv"].acks, None
                produce_ack = (pct(acks, 0.5), pct(acks, 0.99))
                log(f"ours: the generator's produce -> delivery report read: p50 {produce_ack[0]:.2f} ms, "
                    f"p99 {produce_ack[1]:.2f} ms ({len(acks)} records)")
                stages = stage_quantiles(before, stage_buckets())
                for st, (cnt, q50, q99) in stages.items():
                    log(f"ours: stage {st}: {cnt} recorded, p50 <= {q50:g} ms, p99 <= {q99:g} ms")
        # BENCH_HOP=0 skips it (a run that must end within a time slot: about 20 s).
        hop = (run_kafka_hop(rate) if "fanout" in PARTS and os.environ.get("BENCH_HOP", "1") != "0"
               else (nan, nan, nan, nan))
        log(f"the Kafka hop alone at {rate:,.0f} records/s: p50 {hop[0]:.2f} ms, p99 {hop[1]:.2f} ms "
            f"(its produce -> ack p50 {hop[2]:.2f} ms, p99 {hop[3]:.2f} ms)")
        # End to end through the real messaging service (ours only: the peers store nothing).
        e2e = []
        for r in E2E_RATES if "e2e" in PARTS else []:
            e2e.append((r, *run_e2e(fan["ours"]["load"], fan["ours"]["conns"], e2e_rooms, r, E2E_SECONDS)))
            log(f"ours: end to end at {r} messages/s offered: {e2e[-1][1]:,.0f} delivered/s, "
                f"p50 {e2e[-1][2]:.1f} ms, p95 {e2e[-1][3]:.1f} ms, p99 {e2e[-1][4]:.1f} ms "
                f"({e2e[-1][5]:.0f} of {e2e[-1][6]})")
        for name in SERVERS:
            fan[name]["load"].close()
            time.sleep(1.0)
            srv = fan[name]["srv"]
            try:
                if "idle" not in PARTS:
                    raise OSError("not asked for (BENCH_PARTS)")
                fan[name]["idle"] = run_idle(srv, fan[name]["proc"], IDLE)
                log(f"{name}: {IDLE:,} idle connections: {fan[name]['idle'] / 1024:.2f} KiB RSS each")
            except OSError as e:  # the other figures still stand
                fan[name]["idle"] = float("nan")
                log(f"{name}: the idle-memory run failed: {e}")
            stop(fan[name]["proc"])
        results = fan
    finally:
        for p in PROCS:
            stop(p)
        admin.delete_topics(topics)
        pymongo.MongoClient("mongodb://127.0.0.1:27017").drop_database(DB)
        if own_broker:
            subprocess.run(["bash", str(ROOT / "bench/kafka_broker.sh"), "stop"],
                           env={**os.environ, "BENCH_KAFKA_PORT": str(KAFKA_OWN_PORT)})

    o = results["ours"]
    print()
    print(f"socket fan-out, latency and memory (server on core 0, load on core 1; {CLIENTS} clients; "
          f"{IDLE:,} idle; load average {LOAD0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)")
    print(f"{'':34}{'ours':>12}{'uWS.js':>12}{'Socket.IO':>12}{'vs uWS':>9}{'vs SIO':>9}")
    rows = [("rooms of 5, frames/s", "rooms", 1), (f"group of {CLIENTS}, frames/s", "broadcast", 1),
            ("rooms of 5, server CPU us/frame", "rooms_cpu", -1),
            ("rooms of 5, generator CPU us/frame", "rooms_gen_cpu", -1),
            ("rooms of 5, broker CPU us/frame", "rooms_broker_cpu", -1),
            (f"group of {CLIENTS}, server CPU us/frame", "broadcast_cpu", -1),
            ("latency p50 ms", "p50", -1), ("latency p99 ms", "p99", -1),
            ("idle RSS per connection KiB", "idle", -1)]
    for label, k, _ in rows:
        v = [results[n][k] / (1024 if k == "idle" else 1) for n in ("ours", "uws", "sio")]
        fmt = "{:>12,.0f}" if k in ("rooms", "broadcast") else "{:>12.2f}"
        ratio = [f"{v[0] / d:>8.2f}x" if d else f"{'-':>9}" for d in v[1:]]  # the peers' broker: 0
        print(f"{label:34}" + "".join(fmt.format(x) for x in v) + "".join(ratio))
    print("(ratios are ours / peer: above 1 is better for frames/s, below 1 for CPU per frame, latency"
          " and memory; CPU per frame counts every thread of the server, ours's Kafka consumer included,"
          " and is the figure the machine's other load disturbs least)")
    print(f"the Kafka hop alone (producer -> broker -> a consumer on core 0, no socket) at the same rate: "
          f"p50 {hop[0]:.2f} ms, p99 {hop[1]:.2f} ms (produce -> broker ack p50 {hop[2]:.2f}, p99 {hop[3]:.2f}): "
          f"the floor under ours's latency")
    print("the warm-up (BENCH_LATENCY_WARM_S) before each latency run (not counted), p99 ms: " +
          ", ".join(f"{n} {results[n].get('cold_p99', float('nan')):.2f}" for n in ("ours", "uws", "sio")))
    print(f"ours's latency run, the load generator's produce() -> delivery report read (librdkafka's message latency, "
          f"the broker's ack and the generator's delay in polling): "
          f"p50 {produce_ack[0]:.2f} ms, p99 {produce_ack[1]:.2f} ms")
    for st, (cnt, q50, q99) in stages.items():
        print(f"ours's latency run, stage {st} (socket_delivery_stage_seconds, bucket bounds): "
              f"p50 <= {q50:g} ms, p99 <= {q99:g} ms ({cnt} recorded)")
    for r, acc, p50, p95, p99, delivered, n in e2e:
        print(f"end to end at {r}/s offered (WebSocket send -> stored -> delivered): "
              f"{acc:,.0f} messages/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms "
              f"({delivered:.0f} of {n}; the seeds ask p95 under 2 s at 100/s)")


if __name__ == "__main__":
    main()
