"""Fixtures for the end-to-end tests: the platform's real binaries (sanitizer build) on their
own ports, in front of the real local Kafka, FerretDB and Redis, driven by real clients."""

import atexit
import base64
import json
import os
import pathlib
import secrets
import signal
import subprocess
import tempfile
import time
import uuid

import pymongo
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("BUILD_DIR", "build/asan")
KEYS = ROOT / ".local" / "keys"

# Ports of the instances under test: apart from `make run`'s 8080-8082 so both can coexist;
# E2E_PORT_BASE moves them, so two checkouts can run their suites side by side.
_BASE = int(os.environ.get("E2E_PORT_BASE", "18080"))
# Logs of the default run in build/test-logs; another port base keeps its own folder, so a run
# started beside it (which wipes its logs first) does not wipe the logs of the one running.
LOGS = ROOT / "build" / ("test-logs" if _BASE == 18080 else f"test-logs-{_BASE}")
# The other offsets in use: +5..+9 the extra instances of test_gateway_edge (and
# test_gateway_keepalive), test_socket and test_media_s3; +10 test_gateway_ws's gateway; +11 test_media_stream's media; +13..+16 the
# socket instances of test_socket_limits (socket_util); +17 test_housekeeping's extra messaging;
# +21 test_notifications' push provider;
# +22 the SMTP server and +23 the SMS provider of test_notification_{email,sms,escalation,ses};
# +27 the SNS stand-in of test_notification_ses;
# +24 and +25 (on 127.0.0.2) test_webhooks' receiver and canary; +26 the search instance of
# test_search_directory's merge-mode reindex (topics of its own); +28 and +29 (on 127.0.0.2)
# test_notification_webpush's push service and canary.
PORTS = {"gateway": _BASE, "user": _BASE + 1, "messaging": _BASE + 2, "socket": _BASE + 3,
         "media": _BASE + 4, "search": _BASE + 12, "notification": _BASE + 20}
GATEWAY = f"http://127.0.0.1:{PORTS['gateway']}"
MONGO_URI = "mongodb://127.0.0.1:27017"
KAFKA = "127.0.0.1:9092"
REDIS_PORT = "6379"
ADMIN_KEY = "test-admin-" + secrets.token_hex(8)
DB_SUFFIX = secrets.token_hex(3)  # fresh databases per run
DBS = {"user": f"test_user_{DB_SUFFIX}", "messaging": f"test_messaging_{DB_SUFFIX}",
       "media": f"test_media_{DB_SUFFIX}", "notification": f"test_notification_{DB_SUFFIX}",
       # The notification service's deliveries (MONGO_DELIVERIES_DB's default: <MONGO_DB>_deliveries).
       "notification_deliveries": f"test_notification_{DB_SUFFIX}_deliveries"}
MEDIA_URL_KEYS = "t2:" + secrets.token_hex(32) + ",t1:" + secrets.token_hex(32)
# The keys of the services' /internal routes (INTERNAL_KEY_FILE, libcommon/internal.h), fresh
# per run, as in the middle of a rotation: the services send the first and accept both. Tests
# that call those routes themselves send INTERNAL_HEADERS.
INTERNAL_KEY = "test-internal-" + secrets.token_hex(16)
INTERNAL_KEY_OLD = "test-internal-old-" + secrets.token_hex(16)
# One file per pytest process (removed at exit): another pytest on the same checkout, even a
# --collect-only, must not replace the key under a running suite's later-started services.
(ROOT / "build").mkdir(parents=True, exist_ok=True)
_fd, _key_path = tempfile.mkstemp(prefix=f"internal-key-{_BASE}-", dir=ROOT / "build")  # 0600
os.write(_fd, f"{INTERNAL_KEY}\n\n  {INTERNAL_KEY_OLD}\r\n".encode())
os.close(_fd)
INTERNAL_KEY_FILE = pathlib.Path(_key_path)
atexit.register(INTERNAL_KEY_FILE.unlink, missing_ok=True)
INTERNAL_HEADERS = {"X-Internal-Key": INTERNAL_KEY}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Service:
    """One platform process started from the build directory, logging to LOGS (build/test-logs)."""

    def __init__(self, name, extra_env=None):
        self.name = name
        self.port = PORTS[name]
        self.proc = None
        self.env = dict(os.environ)
        self.env.update({
            "HTTP_PORT": str(self.port),
            "HTTP_DRAIN_S": "5",
            "JWT_PRIVATE_KEY_FILE": str(KEYS / "jwt-private.pem"),
            "JWT_PUBLIC_KEY_FILE": str(KEYS / "jwt-public.pem"),
            "PLATFORM_ADMIN_KEY": ADMIN_KEY,
            "INTERNAL_KEY_FILE": str(INTERNAL_KEY_FILE),
            "USER_URL": f"http://127.0.0.1:{PORTS['user']}",
            "MESSAGING_URL": f"http://127.0.0.1:{PORTS['messaging']}",
            "MEDIA_URL": f"http://127.0.0.1:{PORTS['media']}",
            "SEARCH_URL": f"http://127.0.0.1:{PORTS['search']}",
            "NOTIFICATION_URL": f"http://127.0.0.1:{PORTS['notification']}",
            # The notification consumer: a group per run, starting at the latest offset (the
            # run's fresh database must not be filled from every earlier run's events, nor
            # wait for the backlog other checkouts produced on the shared topics meanwhile).
            "NOTIFY_GROUP": f"e2e-notification-{DB_SUFFIX}",
            # The search index: one group and one data directory per checkout, kept across
            # runs (like the media worker's group), so a run does not replay every earlier one.
            "SEARCH_GROUP": f"e2e-search-{_BASE}",
            "SEARCH_DATA_DIR": str(ROOT / "build" / f"search-data-{_BASE}"),
            "MEDIA_URL_KEYS": MEDIA_URL_KEYS,
            # One group per checkout (port base), kept across runs: a fresh group starts at the
            # earliest offset and would replay every earlier run's media events first.
            "MEDIA_WORKER_GROUP": f"e2e-media-worker-{_BASE}",
            # Verifiers take the signing keys from the user service's JWK Set; a kid they do
            # not know makes them refetch it, here at most once a second.
            "JWT_JWKS_URL": f"http://127.0.0.1:{PORTS['user']}/.well-known/jwks.json",
            "JWT_JWKS_MIN_REFRESH_S": "1",
            # Our messaging instance's own consumer group on the shared users topic.
            "USERS_CONSUMER_GROUP": f"e2e-messaging-users-{DB_SUFFIX}",
            # The gateways' rate-limit buckets per checkout: the shared Redis would otherwise
            # give every checkout's suite one bucket for the client address 127.0.0.1.
            "RATELIMIT_KEY_PREFIX": f"rl:e2e-{_BASE}:",
            "JANITOR_EVERY_S": "1",  # the user service's expiry pass
            "OUTBOX_STALE_MS": "2000",
            "TENANT_SETTINGS_TTL_MS": "500",  # messaging: a PATCHed tenant setting applies at once
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
            "UBSAN_OPTIONS": "print_stacktrace=1",
        })
        if name in DBS:
            self.env["MONGO_DB"] = DBS[name]
        self.env.update(extra_env or {})
        self.log_path = LOGS / f"{name}.log"

    def start(self):
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BUILD / "bin" / self.name)], env=self.env,
                                     stdout=log, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after 30 s; see {self.log_path}")

    def dump_stacks(self):
        """A process that does not stop: every thread's stack into its log, to say where."""
        try:
            out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt"],
                                 capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            out = f"no stacks: {e}"
        with open(self.log_path, "a") as log:
            log.write(f"--- {self.name} did not stop within 20 s; its threads:\n{out}\n")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.dump_stacks()
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def extra_service(name, offset, log_name, **env):
    """Another instance of service `name` beside the platform's: HTTP on PORTS[name] + offset,
    `env` over the platform's environment, its log in `log_name` beside the others. Started;
    the caller stops it."""
    svc = Service(name, {"HTTP_PORT": str(PORTS[name] + offset), **env})
    svc.port = PORTS[name] + offset
    svc.log_path = svc.log_path.with_name(log_name)
    svc.start()
    return svc


@pytest.fixture(scope="session")
def platform():
    """Starts user, messaging and gateway; stops them at the end and checks their logs for
    sanitizer reports, so a memory error anywhere fails the run."""
    for p in LOGS.glob("*.log") if LOGS.exists() else []:
        p.unlink()
    # The platform gateway's per-user and per-address buckets (20/s burst 40, 100/s burst 200 by
    # default) are test_gateway_edge.py's subject, on gateways of its own. Here the whole suite
    # comes from one address, and a tenant's api_rate_per_min may only lower the user bucket
    # (busy_tenant raises it above the default): limits that would make tests depend on how
    # fast the services answer (60 sends in a row passed while each took 25 ms or more).
    gateway_env = {"RATELIMIT_USER": "1000/2000", "RATELIMIT_IP": "5000/10000"}
    services = {name: Service(name, gateway_env if name == "gateway" else None)
                for name in ("user", "messaging", "media", "search", "notification", "gateway")}
    started = []
    try:
        for s in services.values():
            s.start()
            started.append(s)
        yield services
    finally:
        codes = {s.name: s.stop() for s in reversed(started)}
        client = pymongo.MongoClient(MONGO_URI)
        for db in DBS.values():
            client.drop_database(db)
    problems = []
    for s in services.values():
        text = s.log_path.read_text(errors="replace") if s.log_path.exists() else ""
        problems += [f"{s.name}: {line}" for line in text.splitlines()
                     if any(m in line for m in SANITIZER_MARKS)]
    assert not problems, "sanitizer reports in service logs:\n" + "\n".join(problems[:20])
    assert all(c == 0 for c in codes.values()), f"services did not stop cleanly: {codes}"


class Api:
    """A thin HTTP client for the gateway."""

    def __init__(self, base=GATEWAY):
        self.base = base
        self.http = requests.Session()

    def call(self, method, path, token=None, body=None, headers=None, raw=None, auth=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        kw = {}
        if raw is not None:
            kw["data"] = raw
            h.setdefault("Content-Type", "application/json")
        elif body is not None:
            kw["json"] = body
        return self.http.request(method, self.base + path, headers=h, auth=auth, timeout=30, **kw)


@pytest.fixture
def api(platform):
    return Api()


def new_tenant(api, self_registration=False, api_rate_per_min=None):
    settings = {"self_registration": self_registration}
    if api_rate_per_min is not None:
        settings["api_rate_per_min"] = api_rate_per_min
    r = api.call("POST", "/v1/tenants", body={"name": "t-" + secrets.token_hex(4), "settings": settings},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 201, r.text
    return r.json()


def token_for(api, tenant, user_id, name=None):
    body = {"user_id": user_id}
    if name:
        body["name"] = name
    r = api.call("POST", "/v1/auth/token", body=body, auth=(tenant["api_key"], tenant["api_secret"]))
    assert r.status_code in (200, 201), r.text
    return r.json()["access_token"]


@pytest.fixture
def tenant(api):
    return new_tenant(api)


@pytest.fixture
def busy_tenant(api):
    """A tenant whose users the gateway lets call as fast as they can (api_rate_per_min
    600,000; the default 1,200 is 20 a second, burst 40): for a test that drives one user
    through more requests than that and is about something else."""
    return new_tenant(api, api_rate_per_min=600000)


@pytest.fixture
def mongo():
    return pymongo.MongoClient(MONGO_URI)[DBS["messaging"]]


def redis_cli(*args):
    """Runs one Redis command with redis-cli against the stack's Redis; returns its output lines."""
    out = subprocess.run(["redis-cli", "-p", REDIS_PORT, *args], capture_output=True, text=True, check=True)
    return out.stdout.rstrip("\n").split("\n")


def assign_since(c, topic, since_ms):
    """Assigns Kafka consumer `c` every partition of `topic` from its first record at or after
    `since_ms`. A partition that holds no such record yet starts at its end as it was before
    the lookup (the high watermark), not at the logical end offsets_for_times answers (-1),
    which the consumer resolves only when it starts fetching and so skips what lands between
    the lookup and the first fetch."""
    md = c.list_topics(topic, timeout=10)
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.topics[topic].partitions}
    parts = c.offsets_for_times([TopicPartition(topic, p, since_ms) for p in ends], timeout=10)
    for tp in parts:
        if tp.offset < 0:
            tp.offset = ends[tp.partition]
    c.assign(parts)


def read_events(topic, want, since_ms, timeout=30.0):
    """Reads `topic` from the first offset at or after `since_ms` on every partition, with a
    real Kafka consumer, until `want(events)` is true or the timeout passes. Returns the
    decoded CloudEvents (with the record key under '_key'). A run whose services use
    KAFKA_TOPIC_PREFIX (topics of their own, away from other checkouts' traffic) reads the
    prefixed topic."""
    topic = os.environ.get("KAFKA_TOPIC_PREFIX", "") + topic
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": "e2e-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        assign_since(c, topic, since_ms)
        events, deadline = [], time.time() + timeout
        while time.time() < deadline and not want(events):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            try:
                ev = json.loads(m.value())
            except ValueError:
                continue  # a shared topic: other producers' records are not ours to judge
            if not isinstance(ev, dict) or ev.get("specversion") != "1.0" or "id" not in ev:
                continue
            ev["_key"] = m.key().decode() if m.key() else None
            events.append(ev)
        return events
    finally:
        c.close()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pytest_collection_modifyitems(session, config, items):
    """test_notifications runs first. The notification service consumes every message of the
    whole suite (each member of each conversation is a recipient), at a few dozen recipients a
    second on FerretDB (services/notification/README.md); after the other files its tests
    would wait behind minutes of their backlog. Known limit, stated in the closing note."""
    items.sort(key=lambda item: 0 if item.module.__name__ == "test_notifications" else 1)
