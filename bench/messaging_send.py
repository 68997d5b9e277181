"""Send-path benchmark (make bench): messages per second and p50/p99 latency of
POST /v1/conversations/{id}/messages through the gateway, side by side with the same sends
straight to the messaging service in the same run (the peer: what the gateway costs), and for
both, every accepted message checked on the `messages` topic with a real Kafka consumer
(publish latency p50/p99: from the request's start to the record's broker timestamp).

It starts its own user, messaging and gateway processes (release build by default) on
BENCH_PORT_BASE (23180) against the local Kafka, FerretDB and Redis, with a fresh database and
the send rate limit off, then stops them and drops the database.

    BUILD_DIR=build/rel .local/venv/bin/python bench/messaging_send.py
Knobs: MONGO_URI (the services' and the cleanup's server, mongodb://127.0.0.1:27017),
BENCH_CONVERSATIONS (32), BENCH_CLIENTS (16), BENCH_MESSAGES (1000 per side),
BENCH_ROUNDS (5: the sides alternate in rounds, so both meet the same database size and the
same machine load).
"""

import http.client
import json
import os
import pathlib
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pymongo
from confluent_kafka import Consumer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("BUILD_DIR", "build/rel")
# Below the kernel's ephemeral range (32768-60999 here), so no client socket holds the port.
BASE = int(os.environ.get("BENCH_PORT_BASE", "23180"))
PORTS = {"gateway": BASE, "user": BASE + 1, "messaging": BASE + 2}
CONVERSATIONS = int(os.environ.get("BENCH_CONVERSATIONS", "32"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
ADMIN = "bench-admin-" + secrets.token_hex(6)
DB = {"user": "bench_user_" + secrets.token_hex(3), "messaging": "bench_messaging_" + secrets.token_hex(3)}
LOGS = ROOT / "build" / "bench-logs"


def port_free(port):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start(name):
    if not port_free(PORTS[name]):
        sys.exit(f"bench: port {PORTS[name]} is taken; set BENCH_PORT_BASE")
    env = dict(os.environ, HTTP_PORT=str(PORTS[name]), HTTP_THREADS="8",
               JWT_PRIVATE_KEY_FILE=str(ROOT / ".local/keys/jwt-private.pem"),
               JWT_PUBLIC_KEY_FILE=str(ROOT / ".local/keys/jwt-public.pem"),
               PLATFORM_ADMIN_KEY=ADMIN, USER_URL=f"http://127.0.0.1:{PORTS['user']}",
               MESSAGING_URL=f"http://127.0.0.1:{PORTS['messaging']}", SEND_RATE_PER_MIN="0",
               LOG_LEVEL="warn")
    if name in DB:
        env["MONGO_DB"] = DB[name]
    LOGS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(BUILD / "bin" / name)], env=env, stdout=open(LOGS / f"{name}.log", "ab"),
                            stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORTS[name], timeout=2)
            c.request("GET", "/health/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"{name} exited; see {LOGS / (name + '.log')}")
        time.sleep(0.1)
    sys.exit(f"{name} not ready")


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


def token(tenant, user):
    import base64
    auth = base64.b64encode(f"{tenant['api_key']}:{tenant['api_secret']}".encode()).decode()
    status, body = call(PORTS["gateway"], "POST", "/v1/auth/token", {"user_id": user}, {"Authorization": f"Basic {auth}"})
    assert status in (200, 201), body
    return body["access_token"]


def run(port, jobs, label):
    """Sends every (token, conversation) job from CLIENTS threads with keep-alive connections;
    returns the accepted message ids with their start times, and the latencies."""
    lock, latencies, accepted, errors = threading.Lock(), [], {}, []
    it = iter(jobs)

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            tok, cid, text = job
            body = json.dumps({"text": text, "client_msg_id": uuid.uuid4().hex})
            t0 = time.time()
            try:
                conn.request("POST", f"/v1/conversations/{cid}/messages", body,
                             {"Content-Type": "application/json", "Authorization": f"Bearer {tok}"})
                r = conn.getresponse()
                data = r.read()
            except OSError as e:
                errors.append(str(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            dt = time.time() - t0
            with lock:
                if r.status == 201:
                    latencies.append(dt)
                    accepted[json.loads(data)["id"]] = t0
                else:
                    errors.append(f"{r.status} {data[:200]!r}")

    start_t = time.time()
    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - start_t
    return {"label": label, "wall": wall, "latencies": latencies, "accepted": accepted, "errors": errors}


def published(ids, since_ms, timeout=120):
    """Reads the messages topic with a real consumer until every id is seen; returns the broker
    timestamps (ms) by id."""
    c = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": "bench-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    seen, deadline = {}, time.time() + timeout
    try:
        md = c.list_topics("messages", timeout=10)
        parts = [TopicPartition("messages", p, since_ms) for p in md.topics["messages"].partitions]
        c.assign(c.offsets_for_times(parts, timeout=10))
        while len(seen) < len(ids) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            try:
                ev = json.loads(m.value())
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("id") in ids and ev["id"] not in seen:
                seen[ev["id"]] = m.timestamp()[1]
    finally:
        c.close()
    return seen


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def report(r, pub):
    lat = [x * 1000 for x in r["latencies"]]
    lag = [pub[i] - r["accepted"][i] * 1000 for i in pub]
    rate = len(r["accepted"]) / r["wall"]
    print(f"bench: {r['label']:<28} {len(r['accepted']):5d} accepted, {len(r['errors'])} errors, "
          f"{rate:8.1f} msg/s, latency p50 {pct(lat, 50):6.1f} ms p99 {pct(lat, 99):6.1f} ms, "
          f"published {len(pub)}/{len(r['accepted'])}, publish p50 {pct(lag, 50):6.1f} ms p99 {pct(lag, 99):6.1f} ms")
    if r["errors"]:
        print("bench:   first errors:", r["errors"][:3])
    return rate, pct(lat, 50), pct(lat, 99)


def main():
    procs = {}
    try:
        for name in ("user", "messaging", "gateway"):
            procs[name] = start(name)
        status, tenant = call(PORTS["gateway"], "POST", "/v1/tenants", {"name": "bench"}, {"X-Admin-Key": ADMIN})
        assert status == 201, tenant
        users = [f"b{i}" for i in range(CONVERSATIONS * 2)]
        toks = {u: token(tenant, u) for u in users}
        convs = []
        for i in range(CONVERSATIONS):
            a, b = users[2 * i], users[2 * i + 1]
            status, conv = call(PORTS["gateway"], "POST", "/v1/conversations", {"type": "direct", "members": [b]},
                                {"Authorization": f"Bearer {toks[a]}"})
            assert status == 201, conv
            convs.append((conv["id"], a, b))

        def jobs(tag, n):
            return [(toks[convs[k % len(convs)][1 + (k // len(convs)) % 2]], convs[k % len(convs)][0],
                     f"{tag} message {k}") for k in range(n)]

        print(f"bench: send path, {MESSAGES} messages per side in {ROUNDS} alternating rounds, {CLIENTS} clients, "
              f"{CONVERSATIONS} conversations, binaries {BUILD}")
        run(PORTS["gateway"], jobs("warm-up", min(200, MESSAGES)), "warm-up")
        since = int(time.time() * 1000) - 1000
        sides = [(PORTS["gateway"], "through the gateway"), (PORTS["messaging"], "straight to messaging (peer)")]
        totals = {label: {"label": label, "wall": 0.0, "latencies": [], "accepted": {}, "errors": []} for _, label in sides}
        for rnd in range(ROUNDS):
            for port, label in (sides if rnd % 2 == 0 else sides[::-1]):
                r = run(port, jobs(f"{label} {rnd}", MESSAGES // ROUNDS), label)
                t = totals[label]
                t["wall"] += r["wall"]
                t["latencies"] += r["latencies"]
                t["accepted"].update(r["accepted"])
                t["errors"] += r["errors"]
        g, d = totals[sides[0][1]], totals[sides[1][1]]
        gp, dp = published(set(g["accepted"]), since), published(set(d["accepted"]), since)
        rg = report(g, gp)
        rd = report(d, dp)
        print(f"bench: gateway / direct: throughput {rg[0] / rd[0]:.2f}x, p50 {rg[1] / rd[1]:.2f}x, p99 {rg[2] / rd[2]:.2f}x")
        if len(gp) != len(g["accepted"]) or len(dp) != len(d["accepted"]):
            sys.exit("bench: some accepted messages were not published")
    finally:
        for name, p in reversed(list(procs.items())):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        client = pymongo.MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017"))
        for db in DB.values():
            client.drop_database(db)


if __name__ == "__main__":
    main()
