"""Push fan-out benchmark (make bench-notification): notifications per second end to end and
the p50/p99 latency from the event to the provider's request, side by side in the same run
with the peer: the provider endpoint's own capacity, measured with wrk posting the same FCM
request bodies straight to it (what the service could reach if it cost nothing).

The path measured: POST /v1/notifications (a tenant backend, BENCH_USERS recipients per
request, BENCH_REQUESTS requests) -> notification.requested events (500 recipients each,
through the outbox and Kafka) -> the consumer (preferences, in-app notifications inserted,
notification.created produced and acknowledged, presence and the devices cache in Redis) ->
the sender (leases, FCM HTTP v1 requests over kept-alive connections, each delivery stored
with its first attempt) -> a local FCM stand-in (bench/fcm_sink.py) that records each
request's arrival.
The latency of a notification runs from the start of the POST that asked for it to its
arrival at the stand-in.

It starts its own notification process (release build) on BENCH_PORT_BASE (23190) against the
local Kafka, FerretDB and Redis with a fresh database and consumer group, registers one FCM
device per user straight in the database (fixture setup, not measured; the service copies
them into its Redis devices cache at the warm-up's first event for the tenant: one query,
once an hour), then stops everything
and drops the database. The issue's goal on this machine: 5,000 notifications/s.

    BUILD_DIR=build/rel .local/venv/bin/python bench/notification_bench.py
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
import tempfile
import time
import uuid

import jwt
import pymongo
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("BUILD_DIR", "build/rel")
BASE = int(os.environ.get("BENCH_PORT_BASE", "23190"))
SVC, SINK = BASE, BASE + 1
USERS = int(os.environ.get("BENCH_USERS", "5000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "4"))
STALL_S = int(os.environ.get("BENCH_STALL_S", "60"))
PEER_SECONDS = int(os.environ.get("BENCH_PEER_SECONDS", "5"))
SUFFIX = secrets.token_hex(3)
DB = "bench_notification_" + SUFFIX
TENANT = "bench-" + SUFFIX
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


def call(method, path, body=None, token=None, port=SVC):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = c.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


def wait_ready(port, proc, name):
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health/ready" if name != "sink" else "/stats")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"bench: {name} exited; see {LOGS}")
        time.sleep(0.1)
    sys.exit(f"bench: {name} not ready")


def sends():
    return call("GET", "/stats", port=SINK)[1]["sends"]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def peer_capacity(body):
    """The stand-in's own capacity: wrk posting the same FCM body over 64 kept-alive
    connections for PEER_SECONDS (one thread, as the service's sender is one thread)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["Authorization"] = "Bearer ya29.bench"\n' % json.dumps(body))
        script = f.name
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{PEER_SECONDS}s", "--latency", "-s", script,
                          f"http://127.0.0.1:{SINK}/v1/projects/bench/messages:send"],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    p99 = next((line.split()[1] for line in out.splitlines() if line.strip().startswith("99%")), "?")
    return rps, p99


def main():
    LOGS.mkdir(parents=True, exist_ok=True)
    for port in (SVC, SINK):
        if not port_free(port):
            sys.exit(f"bench: port {port} is taken; set BENCH_PORT_BASE")
    work = pathlib.Path(tempfile.mkdtemp(prefix="nfbench-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds = work / "sa.json"
    creds.write_text(json.dumps({
        "type": "service_account", "client_email": "bench@bench.iam.gserviceaccount.com",
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "token_uri": f"http://127.0.0.1:{SINK}/token"}))
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench/fcm_sink.py"), str(SINK)],
                            stdout=open(LOGS / "fcm_sink.log", "ab"), stderr=subprocess.STDOUT)
    env = dict(os.environ, HTTP_PORT=str(SVC), HTTP_THREADS="4", MONGO_DB=DB,
               NOTIFY_GROUP="bench-notification-" + SUFFIX, LOG_LEVEL="warn",
               JWT_PUBLIC_KEY_FILE="bench=" + str(ROOT / ".local/keys/jwt-public.pem"),
               FCM_BASE_URL=f"http://127.0.0.1:{SINK}", FCM_PROJECT_ID="bench",
               FCM_CREDENTIALS_FILE=str(creds))
    env.pop("JWT_JWKS_URL", None)
    svc = subprocess.Popen([str(BUILD / "bin/notification")], env=env,
                           stdout=open(LOGS / "notification.log", "ab"), stderr=subprocess.STDOUT)
    mongo = pymongo.MongoClient("mongodb://127.0.0.1:27017")
    try:
        wait_ready(SINK, sink, "sink")
        wait_ready(SVC, svc, "notification")
        users = [f"u{i:05d}" for i in range(USERS)]
        mongo[DB].devices.insert_many([
            {"_id": str(uuid.uuid4()), "k": f"{TENANT}|fcm|tok-{u}", "tenant": TENANT, "user_id": u,
             "platform": "fcm", "token": f"tok-{u}", "created_at": time.time()} for u in users], ordered=False)
        now = int(time.time())
        admin = jwt.encode({"sub": "backend", "tid": TENANT, "sid": "bench-" + SUFFIX, "roles": ["tenant_admin"], "perms": ["tenant.manage"],
                            "iss": "chat-platform", "aud": "chat-api", "iat": now, "exp": now + 3600},
                           (ROOT / ".local/keys/jwt-private.pem").read_bytes(), algorithm="RS256", headers={"kid": "bench"})
        # Warm-up: the access token, connections, the consumer's first fetch.
        status, body = call("POST", "/v1/notifications", {"user_ids": users[:10], "title": "warm-up", "body": "x"}, admin)
        assert status == 202, body
        deadline = time.time() + 60
        while sends() < 10:
            assert time.time() < deadline, "warm-up push never arrived"
            time.sleep(0.1)
        call("POST", "/reset", port=SINK)
        posted = {}
        t_first = time.time()
        for k in range(REQUESTS):
            title = f"bench-{k}"
            posted[title] = time.time()
            status, body = call("POST", "/v1/notifications",
                                {"user_ids": users, "title": title, "body": "The quick brown fox."}, admin)
            assert status == 202, body
        t_posted = time.time()
        want = USERS * REQUESTS
        last, last_change = 0, time.time()
        while True:
            n = sends()
            if n >= want:
                break
            if n != last:
                last, last_change = n, time.time()
            if time.time() - last_change > STALL_S:
                print(f"bench: stalled at {n} of {want} sends", file=sys.stderr)
                c = http.client.HTTPConnection("127.0.0.1", SVC, timeout=10)
                c.request("GET", "/metrics")
                print("\n".join(l for l in c.getresponse().read().decode().splitlines()
                                if l.startswith("notification_")), file=sys.stderr)
                break
            time.sleep(0.2)
        dump = work / "sends.jsonl"
        call("POST", f"/dump?path={dump}", port=SINK)
        lat, arrivals, sample = [], [], None
        if not dump.exists() or not dump.read_text():
            sys.exit("bench: no push arrived")
        for line in dump.read_text().splitlines():
            at, raw = json.loads(line)
            msg = json.loads(raw)["message"]
            sample = sample or msg
            t0 = posted.get(msg["notification"]["title"])
            if t0 is not None:
                lat.append(at - t0)
                arrivals.append(at)
        got = len(arrivals)
        elapsed = max(arrivals) - t_first if arrivals else float("nan")
        rate = got / elapsed if arrivals else 0.0
        call("POST", "/reset", port=SINK)
        peer_rps, peer_p99 = peer_capacity({"message": sample})
        print(f"notification push fan-out: {USERS} users x {REQUESTS} requests = {want} notifications "
              f"(FerretDB, Kafka, Redis shared; {BUILD.name} build)")
        print(f"  service end to end : {got} pushes in {elapsed:.2f} s = {rate:,.0f}/s; event -> provider "
              f"p50 {statistics.median(lat) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms")
        # The producer side: how long the tenant backend's POSTs took (part of the elapsed
        # time above), and the load average, which moves these figures most on a shared box.
        print(f"  requests posted in : {t_posted - t_first:.2f} s; load average {os.getloadavg()[0]:.1f}")
        print(f"  peer (wrk -> stand-in, same body): {peer_rps:,.0f} requests/s, p99 {peer_p99}")
        print(f"  ratio service/peer : {rate / peer_rps:.3f}; goal 5,000/s: {'met' if rate >= 5000 else 'NOT met'} "
              f"({rate / 5000:.2f} of it)")
        if got < want:
            print(f"  MISSING: {want - got} pushes never arrived")
    finally:
        svc.send_signal(signal.SIGTERM)
        try:
            svc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            svc.kill()
        sink.send_signal(signal.SIGTERM)
        sink.wait()
        mongo.drop_database(DB)
        mongo.drop_database(DB + "_deliveries")


if __name__ == "__main__":
    main()
