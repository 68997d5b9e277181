"""The gateway as a production edge, against real processes: a second messaging instance killed
under traffic (breaker, failover, half-open recovery), rate limits shared by two gateways through
Redis and kept locally without it, identity headers a client cannot spoof, size caps, and the
admin view of the upstreams."""

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import ADMIN_KEY, INTERNAL_HEADERS, LOGS, PORTS, Service, new_tenant, token_for
from users_lib import register

BASE = PORTS["gateway"]
MSG2_PORT = BASE + 5
GW2_PORT = BASE + 6
REDIS_PORT = BASE + 7
GW3_PORT = BASE + 8
ECHO_PORT = BASE + 9


def start_instance(name, port, env, log_name):
    """One more instance of a platform process on `port` (the conftest fixtures own the rest)."""
    s = Service(name, {"HTTP_PORT": str(port), **env})
    s.port = port
    s.log_path = LOGS / f"{log_name}.log"
    s.start()
    return s


def gateway(port, env, log_name):
    base = {"RATELIMIT_IP": "0", "RATELIMIT_USER": "0", "RATELIMIT_TENANT": "0"}
    base.update(env)
    return start_instance("gateway", port, base, log_name)


def admin_upstreams(port):
    r = requests.get(f"http://127.0.0.1:{port}/v1/gateway/upstreams", headers={"X-Admin-Key": ADMIN_KEY}, timeout=5)
    assert r.status_code == 200, r.text
    return {p["name"]: {i["id"]: i for i in p["instances"]} for p in r.json()["items"]}


def sanitizer_clean(*services):
    for s in services:
        text = s.log_path.read_text(errors="replace")
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, s.log_path


def test_kill_one_of_two_instances_under_traffic(platform, api):
    """Clients see at most the requests in flight on the killed instance fail; its circuit
    opens, traffic moves to the other one, and when it returns a half-open trial closes it."""
    msg2 = start_instance("messaging", MSG2_PORT, {}, "messaging2")
    m1, m2 = f"127.0.0.1:{PORTS['messaging']}", f"127.0.0.1:{MSG2_PORT}"
    # The breaker stays open past the observation window below (a half-open trial inside it
    # would reach the killed instance whenever active checks also flag the live one).
    gw = gateway(GW2_PORT, {"MESSAGING_URL": f"http://{m1},http://{m2}", "BREAKER_OPEN_MS": "10000",
                            "UPSTREAM_HEALTH_INTERVAL_MS": "500", "RETRY_BACKOFF_MS": "5"}, "gateway-failover")
    stop, threads = threading.Event(), []
    try:
        tenant = new_tenant(api)
        users = [f"f{i}" for i in range(6)]
        tok = {u: token_for(api, tenant, u) for u in users}
        base = f"http://127.0.0.1:{GW2_PORT}"
        r = requests.post(base + "/v1/conversations", json={"type": "group", "members": users[1:]},
                          headers={"Authorization": f"Bearer {tok['f0']}"}, timeout=10)
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        lock = threading.Lock()
        stats = {"get_ok": 0, "get_fail": [], "post_ok": 0, "post_fail": []}

        def reader(u):
            s = requests.Session()
            while not stop.is_set():
                r = s.get(base + f"/v1/conversations/{cid}/messages", headers={"Authorization": f"Bearer {tok[u]}"}, timeout=10)
                with lock:
                    if r.status_code == 200:
                        stats["get_ok"] += 1
                    else:
                        stats["get_fail"].append(r.status_code)

        def writer(u):
            s, n = requests.Session(), 0
            while not stop.is_set():
                if n >= 50:  # the messaging service's own limit is 60 sends a minute per user
                    time.sleep(0.05)
                    continue
                n += 1
                r = s.post(base + f"/v1/conversations/{cid}/messages", json={"text": "x", "client_msg_id": f"{u}-{n}"},
                           headers={"Authorization": f"Bearer {tok[u]}"}, timeout=10)
                with lock:
                    if r.status_code in (200, 201):
                        stats["post_ok"] += 1
                    else:
                        stats["post_fail"].append(r.status_code)

        threads = [threading.Thread(target=reader, args=(u,)) for u in users[:2]]
        threads += [threading.Thread(target=writer, args=(u,)) for u in users[2:]]
        for t in threads:
            t.start()
        time.sleep(1.5)
        before = admin_upstreams(GW2_PORT)["messaging"]
        assert before[m2]["requests"] > 5 and before[m1]["requests"] > 5, before  # both served
        msg2.stop(signal.SIGKILL)
        # A send the killed instance had under way leaves its conversation's write lease behind
        # (LOCK_TTL_MS, 3 s): until it expires the live instance's sends wait for it, holding
        # its server threads, so it serves nothing. The window starts after that.
        time.sleep(4.0)
        after_kill = admin_upstreams(GW2_PORT)["messaging"]
        served_m1 = after_kill[m1]["requests"]
        time.sleep(1.0)
        mid = admin_upstreams(GW2_PORT)["messaging"]
        stop.set()
        for t in threads:
            t.join()

        # Idempotent reads were retried on the live instance: none failed. Sends (POST without
        # Idempotency-Key) may fail only if they were in flight on the killed one: at most one
        # per writer thread (four).
        assert stats["get_fail"] == [], stats
        assert len(stats["post_fail"]) <= 4, stats
        assert stats["get_ok"] > 20 and stats["post_ok"] > 10, stats
        # The breaker opened on the dead instance (or the health check took it out first), and
        # the traffic moved: only the live one served in the last second.
        assert mid[m2]["circuit"] == "open" or not mid[m2]["healthy"], mid
        assert mid[m2]["circuit_opened_total"] >= 1, mid
        assert mid[m1]["requests"] > served_m1, mid
        assert mid[m2]["requests"] == after_kill[m2]["requests"], (after_kill, mid)
        metrics = requests.get(base + "/metrics", timeout=5).text
        assert re.search(r'gateway_upstream_circuit_opened_total\{pool="messaging",instance="%s"\} [1-9]' % re.escape(m2), metrics)
        assert re.search(r'gateway_route_retries_total\{route="/v1/conversations",pool="messaging"\} [1-9]', metrics)

        # It comes back: health checks see it, the open time passes, trials close the circuit.
        msg2 = start_instance("messaging", MSG2_PORT, {}, "messaging2")
        s = requests.Session()
        deadline = time.time() + 20
        state = None
        while time.time() < deadline:
            r = s.get(base + f"/v1/conversations/{cid}/messages", headers={"Authorization": f"Bearer {tok['f0']}"}, timeout=10)
            assert r.status_code == 200, r.text
            state = admin_upstreams(GW2_PORT)["messaging"][m2]
            if state["circuit"] == "closed" and state["healthy"] and state["requests"] > mid[m2]["requests"] + 2:
                break
            time.sleep(0.1)
        assert state["circuit"] == "closed" and state["healthy"], state
        assert state["requests"] > mid[m2]["requests"], state
    finally:
        stop.set()  # a failed assertion must not leave the clients running into the next test
        for t in threads:
            t.join(15)
        gw.stop()
        msg2.stop()
    sanitizer_clean(gw, msg2)


def test_open_circuits_answer_503_at_once(platform):
    """With every instance of a pool broken, the gateway answers 503 problem+json without
    waiting for an upstream, with Retry-After from the breaker."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]  # bound, never listening: connections are refused
    gw = gateway(GW2_PORT, {"GATEWAY_POOLS": f"dead=http://127.0.0.1:{port}", "GATEWAY_ROUTES": "/v1/dead dead auth=none",
                            "BREAKER_MIN_REQUESTS": "3", "BREAKER_FAILURES": "3", "BREAKER_OPEN_MS": "30000",
                            "UPSTREAM_HEALTH_INTERVAL_MS": "0"}, "gateway-dead")
    try:
        url = f"http://127.0.0.1:{GW2_PORT}/v1/dead/x"
        # A GET is tried three times (two retries on the only instance): three failures in a
        # row once three requests were seen open the circuit.
        r = requests.get(url, timeout=10)
        assert r.status_code == 503 and r.json()["type"] == "urn:chat:problem:unavailable", r.text
        t = time.time()
        r = requests.get(url, timeout=10)
        took = time.time() - t
        assert r.status_code == 503, r.text
        assert r.headers["Content-Type"] == "application/problem+json"
        body = r.json()
        assert body["type"] == "urn:chat:problem:upstream-unavailable" and "dead" in body["detail"], body
        assert 25 <= int(r.headers["Retry-After"]) <= 30, r.headers
        assert took < 0.5, took
        # The operator closes it by hand; the next request tries the upstream again.
        r = requests.post(f"http://127.0.0.1:{GW2_PORT}/v1/gateway/upstreams/dead/reset", timeout=5)
        assert r.status_code == 401, r.text
        r = requests.post(f"http://127.0.0.1:{GW2_PORT}/v1/gateway/upstreams/dead/reset?instance=127.0.0.1:{port}",
                          headers={"X-Admin-Key": ADMIN_KEY}, timeout=5)
        assert r.status_code == 200 and r.json()["reset"] == 1, r.text
        assert admin_upstreams(GW2_PORT)["dead"][f"127.0.0.1:{port}"]["circuit"] == "closed"
        r = requests.get(url, timeout=10)
        assert r.json()["type"] == "urn:chat:problem:unavailable", r.text
        r = requests.post(f"http://127.0.0.1:{GW2_PORT}/v1/gateway/upstreams/nope/reset", headers={"X-Admin-Key": ADMIN_KEY}, timeout=5)
        assert r.status_code == 404, r.text
    finally:
        gw.stop()
        dead.close()
    sanitizer_clean(gw)


@pytest.fixture
def own_redis():
    """A Redis of this test's own, so stopping it touches nothing shared."""
    exe = shutil.which("redis-server")
    proc = subprocess.Popen([exe, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_two_gateways_share_limits_and_keep_serving_without_redis(platform, api, own_redis):
    env = {"RATELIMIT_IP": "0.5/8", "RATELIMIT_REDIS_PORT": str(REDIS_PORT)}
    a = gateway(GW2_PORT, env, "gateway-rl-a")
    b = gateway(GW3_PORT, env, "gateway-rl-b")
    try:
        path = "/.well-known/jwks.json"  # cheap, no token
        ga, gb = f"http://127.0.0.1:{GW2_PORT}{path}", f"http://127.0.0.1:{GW3_PORT}{path}"
        codes = [requests.get(ga if i % 2 else gb, timeout=5) for i in range(12)]
        ok = [r for r in codes if r.status_code == 200]
        refused = [r for r in codes if r.status_code == 429]
        # One bucket of 8 for this address across both gateways (plus at most one refill).
        assert 8 <= len(ok) <= 9 and len(ok) + len(refused) == 12, [r.status_code for r in codes]
        r = refused[-1]
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["type"] == "urn:chat:problem:rate-limited" and "ip" in r.json()["detail"], r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 3, r.headers
        assert r.headers["RateLimit-Limit"] == "8" and r.headers["RateLimit-Remaining"] == "0", r.headers
        assert int(ok[0].headers["RateLimit-Remaining"]) in (6, 7), ok[0].headers
        assert re.search(r'gateway_ratelimit_rejected_total\{scope="ip"\} [1-9]',
                         requests.get(f"http://127.0.0.1:{GW2_PORT}/metrics", timeout=5).text + requests.get(f"http://127.0.0.1:{GW3_PORT}/metrics", timeout=5).text)

        # Redis gone: both keep serving, each with its own local bucket of 8.
        own_redis.terminate()
        own_redis.wait(10)
        for g in (ga, gb):
            rs = [requests.get(g, timeout=5).status_code for _ in range(11)]
            assert 503 not in rs and rs.count(200) in (8, 9) and rs.count(429) >= 2, rs
        for port in (GW2_PORT, GW3_PORT):
            m = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert re.search(r"gateway_ratelimit_local_decisions_total [1-9]", m), m[-500:]
    finally:
        a.stop()
        b.stop()
    sanitizer_clean(a, b)


def test_gateways_with_different_key_prefixes_keep_separate_buckets(platform, api, own_redis):
    """RATELIMIT_KEY_PREFIX: two deployments (here two e2e checkouts) on one Redis must not
    spend each other's per-address bucket."""
    env = {"RATELIMIT_IP": "0.5/8", "RATELIMIT_REDIS_PORT": str(REDIS_PORT)}
    a = gateway(GW2_PORT, {**env, "RATELIMIT_KEY_PREFIX": "rl:deploy-a:"}, "gateway-prefix-a")
    b = gateway(GW3_PORT, {**env, "RATELIMIT_KEY_PREFIX": "rl:deploy-b:"}, "gateway-prefix-b")
    try:
        path = "/.well-known/jwks.json"
        ra = [requests.get(f"http://127.0.0.1:{GW2_PORT}{path}", timeout=5).status_code for _ in range(10)]
        assert ra.count(200) in (8, 9) and ra[-1] == 429, ra
        rb = [requests.get(f"http://127.0.0.1:{GW3_PORT}{path}", timeout=5).status_code for _ in range(5)]
        assert rb == [200] * 5, rb
        keys = subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "--raw", "keys", "rl:*"],
                              capture_output=True, text=True, timeout=10).stdout.split()
        assert sorted(keys) == ["rl:deploy-a:ip:127.0.0.1", "rl:deploy-b:ip:127.0.0.1"], keys
    finally:
        a.stop()
        b.stop()
    sanitizer_clean(a, b)


def metric(port, name):
    m = re.search(rf"^{name} (\d+)", requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, re.M)
    assert m, name
    return int(m.group(1))


def test_two_gateways_lease_one_bucket(platform, api, own_redis):
    """RATELIMIT_LEASE_MS: a busy bucket's tokens are taken from Redis ahead, so most admitted
    requests make no round trip; two gateways spending leases of one shared bucket still admit
    no more than it holds (plus its refill), and at most the tokens left in their leases
    (L-1 each, L = 1/s x 10 s = 10) go unused."""
    env = {"RATELIMIT_USER": "1/40", "RATELIMIT_LEASE_MS": "10000", "RATELIMIT_REDIS_PORT": str(REDIS_PORT),
           "GATEWAY_ROUTES": "/.well-known/jwks.json user auth=bearer"}
    a = gateway(GW2_PORT, env, "gateway-lease-a")
    b = gateway(GW3_PORT, env, "gateway-lease-b")
    try:
        tok = token_for(api, new_tenant(api), "lease1")
        h = {"Authorization": f"Bearer {tok}"}
        t0 = time.time()
        codes = [requests.get(f"http://127.0.0.1:{GW2_PORT if i % 2 else GW3_PORT}/.well-known/jwks.json",
                              headers=h, timeout=5).status_code for i in range(70)]
        elapsed = time.time() - t0
        ok = codes.count(200)
        assert codes.count(429) == 70 - ok, codes
        assert 40 - 2 * 9 <= ok <= 40 + int(elapsed) + 1, (ok, elapsed, codes)
        leased = metric(GW2_PORT, "gateway_ratelimit_leased_decisions_total") + \
            metric(GW3_PORT, "gateway_ratelimit_leased_decisions_total")
        assert leased >= ok - 12, (leased, ok)  # one lease of 10 per round trip, a few refills
    finally:
        a.stop()
        b.stop()
    sanitizer_clean(a, b)


def test_user_and_tenant_buckets(platform, api):
    gw = gateway(GW2_PORT, {"RATELIMIT_USER": "0.2/3", "RATELIMIT_TENANT": "0.2/5"}, "gateway-rl-user")
    try:
        tenant = new_tenant(api)
        t1, t2 = token_for(api, tenant, "ru1"), token_for(api, tenant, "ru2")
        url = f"http://127.0.0.1:{GW2_PORT}/v1/conversations"
        r1 = [requests.get(url, headers={"Authorization": f"Bearer {t1}"}, timeout=5) for _ in range(4)]
        assert [r.status_code for r in r1] == [200, 200, 200, 429], [r.text for r in r1]
        assert "user" in r1[3].json()["detail"], r1[3].text
        # The user's refused request took nothing from the tenant: 2 of 5 left for ru2.
        r2 = [requests.get(url, headers={"Authorization": f"Bearer {t2}"}, timeout=5) for _ in range(3)]
        assert [r.status_code for r in r2] == [200, 200, 429], [r.text for r in r2]
        assert "tenant" in r2[2].json()["detail"], r2[2].text
    finally:
        gw.stop()
    sanitizer_clean(gw)


class Echo(http.server.BaseHTTPRequestHandler):
    """An upstream that answers with the headers it received."""

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


@pytest.fixture
def echo_gateway(platform):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", ECHO_PORT), Echo)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    gw = gateway(GW2_PORT, {"GATEWAY_POOLS": f"echo=http://127.0.0.1:{ECHO_PORT}",
                            "GATEWAY_ROUTES": "/echo echo auth=none; /secure-echo echo; /admin-echo echo auth=admin;"
                                              "/tenant-echo echo auth=tenant-key max_body=1000",
                            "HTTP_MAX_HEADER_BYTES": "8192", "GATEWAY_CORS_REFRESH_S": "1",
                            "RATELIMIT_USER": "1000/1000"}, "gateway-echo")
    yield f"http://127.0.0.1:{GW2_PORT}"
    gw.stop()
    srv.shutdown()
    srv.server_close()
    sanitizer_clean(gw)


def test_identity_headers_cannot_be_spoofed(echo_gateway, api):
    tenant = new_tenant(api)
    tok = token_for(api, tenant, "honest")
    spoof = {"X-Auth-User": "admin", "X-Auth-Tenant": "other", "X-Auth-Roles": "owner",
             "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil", "X-Real-IP": "1.2.3.4",
             "Forwarded": "for=1.2.3.4", "X-Gateway-Upstream": "x", "Authorization": f"Bearer {tok}",
             "X-Internal-Key": "guess",
             "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "k=v"}
    r = requests.get(echo_gateway + "/secure-echo/x", headers=spoof, timeout=5)
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["x-auth-user"] == "honest" and h["x-auth-tenant"] == tenant["id"], h
    assert "x-auth-roles" not in h and "x-forwarded-host" not in h and "x-real-ip" not in h, h
    assert "forwarded" not in h and "x-gateway-upstream" not in h and "x-internal-key" not in h, h
    assert h["x-forwarded-for"] == "127.0.0.1", h
    # The trace continues with the gateway's own span; tracestate passes through.
    assert h["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and h["traceparent"].endswith("-01"), h
    assert h["traceparent"][36:52] != "00f067aa0ba902b7" and h["tracestate"] == "k=v", h
    assert h["x-request-id"] == r.headers["X-Request-Id"], (h, r.headers)
    # Without a token on an open route: no identity at all, whatever the client claims.
    h = requests.get(echo_gateway + "/echo", headers={"X-Auth-User": "admin"}, timeout=5).json()
    assert "x-auth-user" not in h and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", h["traceparent"]), h
    # Security headers on proxied answers and on the gateway's own problems.
    for resp in (r, requests.get(echo_gateway + "/nowhere", timeout=5)):
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["X-Frame-Options"] == "DENY", resp.headers


def set_cors(api, tenant, origins):
    r = api.call("PATCH", f"/v1/tenants/{tenant['id']}", body={"settings": {"cors_allowed_origins": origins}},
                 headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200 and r.json()["settings"]["cors_allowed_origins"] == origins, r.text


def preflight(base, origin, method="POST", headers="authorization, content-type", path="/secure-echo/x"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(base + path, headers=h, timeout=5)


def wait_for(fn, what, timeout=8):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_cors_allowlist_per_tenant(echo_gateway, api):
    """Each tenant's cors_allowed_origins (a tenant setting in the user service) decides which
    browser origins may call the API: preflights are answered at the edge for an origin some
    tenant allows, and an actual request gets Access-Control-Allow-Origin only when its token's
    tenant allows that origin. Changes reach the gateway without a restart."""
    a, b = new_tenant(api), new_tenant(api)
    oa, ob = "https://app-" + a["id"][:8] + ".example", "http://localhost:" + str(3000 + int(b["id"][-3:], 16) % 1000)
    # The setting is validated like the WebSocket list, and a bad patch changes nothing.
    for bad, why in (([oa + "/path"], "item 0 must be an origin"), ("https://x.io", "array of at most 20"),
                     ([oa, oa], "repeats"), ([f"https://h{i}.io" for i in range(21)], "array of at most 20")):
        r = api.call("PATCH", f"/v1/tenants/{a['id']}", body={"settings": {"cors_allowed_origins": bad}},
                     headers={"X-Admin-Key": ADMIN_KEY})
        assert r.status_code == 400 and why in r.json()["detail"], (bad, r.text)
    r = api.call("GET", f"/v1/tenants/{a['id']}", headers={"X-Admin-Key": ADMIN_KEY})
    assert r.json()["settings"]["cors_allowed_origins"] == [], r.text
    # Before any tenant allows it, an origin's preflight is refused without CORS headers.
    r = preflight(echo_gateway, oa)
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers, r.headers
    assert r.headers["Content-Type"] == "application/problem+json" and oa in r.json()["detail"], r.text
    set_cors(api, a, [oa])
    set_cors(api, b, [ob])
    # The list the gateways read is on the user service's internal route, which the gateway
    # does not route (the public path is only the operator's tenant API, where it is no tenant).
    assert api.call("GET", "/internal/v1/tenants/cors-origins").status_code == 404
    items = requests.get(f"http://127.0.0.1:{PORTS['user']}/internal/v1/tenants/cors-origins",
                         headers=INTERNAL_HEADERS, timeout=5).json()["items"]
    assert {"tenant_id": a["id"], "origins": [oa]} in items and {"tenant_id": b["id"], "origins": [ob]} in items
    wait_for(lambda: preflight(echo_gateway, oa).status_code == 204, "tenant a's origin reaches the gateway")
    wait_for(lambda: preflight(echo_gateway, ob).status_code == 204, "tenant b's origin reaches the gateway")

    # The preflight, answered by the gateway (the echo upstream has no OPTIONS: it would say 501).
    r = preflight(echo_gateway, oa.upper().replace("HTTPS", "https"))
    assert r.status_code == 204 and r.content == b"", r.text
    r = preflight(echo_gateway, oa)
    assert r.headers["Access-Control-Allow-Origin"] == oa, r.headers
    assert "POST" in r.headers["Access-Control-Allow-Methods"] and "PATCH" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type", r.headers
    assert r.headers["Access-Control-Max-Age"] == "600" and "Origin" in r.headers["Vary"], r.headers
    assert "Access-Control-Allow-Credentials" not in r.headers, r.headers
    r = preflight(echo_gateway, oa, headers="authorization, x-evil")
    assert r.status_code == 403 and "x-evil" in r.json()["detail"] and "Access-Control-Allow-Origin" not in r.headers
    r = preflight(echo_gateway, oa, method="TRACE")
    assert r.status_code == 403 and "TRACE" in r.json()["detail"], r.text
    for evil in ("https://evil.example", oa + ".evil.example", "null", oa[:-1]):
        r = preflight(echo_gateway, evil)
        assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers, (evil, r.headers)

    # Actual requests: the token's tenant decides.
    ta, tb = token_for(api, a, "alice"), token_for(api, b, "bob")
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Authorization": f"Bearer {ta}", "Origin": oa}, timeout=5)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == oa, r.headers
    exposed = [h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")]
    assert {"X-Request-Id", "RateLimit-Remaining", "Retry-After", "Location"} <= set(exposed), exposed
    assert "Origin" in r.headers["Vary"], r.headers
    # Tenant b's origin is allowed somewhere, but not by tenant a: no CORS for a's token there.
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Authorization": f"Bearer {ta}", "Origin": ob}, timeout=5)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers, r.headers
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Authorization": f"Bearer {tb}", "Origin": ob}, timeout=5)
    assert r.headers.get("Access-Control-Allow-Origin") == ob, r.headers
    # Without an Origin (not a browser): no CORS headers, but Vary all the same for caches.
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Authorization": f"Bearer {ta}"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in r.headers and "Origin" in r.headers["Vary"], r.headers
    # A refused token's 401 stays readable by an allowed origin's app (so it can refresh).
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Origin": oa}, timeout=5)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == oa, r.headers
    # Security headers on every answer, preflights included.
    for resp in (r, preflight(echo_gateway, oa)):
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000"), resp.headers
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"] == "no-referrer"

    # Taken off the list: refused again within the refresh period, without a restart.
    set_cors(api, a, [])
    wait_for(lambda: preflight(echo_gateway, oa).status_code == 403, "tenant a's origin leaves the gateway")
    r = requests.get(echo_gateway + "/secure-echo/x", headers={"Authorization": f"Bearer {ta}", "Origin": oa}, timeout=5)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers, r.headers
    # A suspended tenant's browsers get no CORS answer either.
    assert api.call("POST", f"/v1/tenants/{b['id']}/suspend", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    wait_for(lambda: preflight(echo_gateway, ob).status_code == 403, "a suspended tenant's origin leaves the gateway")
    m = requests.get(echo_gateway + "/metrics", timeout=5).text
    assert re.search(r"gateway_cors_preflights_total [1-9]", m) and re.search(r"gateway_cors_refused_total [1-9]", m), m[-800:]


def test_revoked_sessions_and_suspended_tenants_refused_at_the_edge(echo_gateway, api):
    """The denylist is checked by the gateway itself (in the rate limits' Redis round trip), not
    left to the services: the echo upstream checks nothing. The tokens were verified before, so
    they are answered from the verified-token cache, which must not skip the denylist."""
    t = new_tenant(api, self_registration=True)
    s1, s2 = register(api, t), register(api, t)
    for s in (s1, s2):
        h = {"Authorization": f"Bearer {s['access_token']}"}
        assert requests.get(echo_gateway + "/secure-echo", headers=h, timeout=5).status_code == 200
    assert api.call("POST", "/v1/auth/logout", s1["access_token"]).status_code == 204
    r = requests.get(echo_gateway + "/secure-echo", headers={"Authorization": f"Bearer {s1['access_token']}"}, timeout=5)
    assert r.status_code == 401 and r.json()["detail"] == "the session was revoked", r.text
    assert r.headers["WWW-Authenticate"] == "Bearer", r.headers
    h2 = {"Authorization": f"Bearer {s2['access_token']}"}
    assert requests.get(echo_gateway + "/secure-echo", headers=h2, timeout=5).status_code == 200
    assert api.call("POST", f"/v1/tenants/{t['id']}/suspend", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    fresh = token_for(api, new_tenant(api), "x")  # another tenant: unaffected, and a token not cached yet
    assert requests.get(echo_gateway + "/secure-echo", headers={"Authorization": f"Bearer {fresh}"}, timeout=5).status_code == 200
    r = requests.get(echo_gateway + "/secure-echo", headers=h2, timeout=5)
    assert r.status_code == 401 and r.json()["detail"] == "the tenant is suspended", r.text
    assert api.call("POST", f"/v1/tenants/{t['id']}/resume", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    assert requests.get(echo_gateway + "/secure-echo", headers=h2, timeout=5).status_code == 200
    # Answered by the gateway's copy of the denylist (followed on its pub/sub channel), no
    # round trip: both refusals were its own.
    port = int(echo_gateway.rsplit(":", 1)[1])
    assert metric(port, "gateway_denylist_copy_valid") == 1
    assert metric(port, "gateway_denylist_copy_refused_total") >= 2


def redis_server(port):
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True).returncode == 0,
             "redis-server answers")
    return proc


def test_denylist_copy_loads_follows_and_falls_back(platform, api, own_redis):
    """The gateway's copy of the denylist (on a Redis of this test's own, written as
    cm_session_* write it): keys set before the gateway started are loaded, a change published
    afterwards is refused by the very next request, and while Redis is away the gateway asks it
    per request (503: the session state cannot be checked), never letting a token through on a
    stale copy; when Redis is back the copy is loaded again."""
    cli = lambda *a: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), *a], check=True, capture_output=True)
    t = new_tenant(api, self_registration=True)
    s1, s2 = register(api, t), register(api, t)
    cli("SET", f"revoked:sid:{s1['session_id']}", "1", "PX", "600000")
    gw = gateway(GW2_PORT, {"REDIS_PORT": str(REDIS_PORT), "GATEWAY_ROUTES": "/.well-known/jwks.json user auth=bearer"},
                 "gateway-denylist-copy")
    second = None
    try:
        url = f"http://127.0.0.1:{GW2_PORT}/.well-known/jwks.json"
        get = lambda s: requests.get(url, headers={"Authorization": f"Bearer {s['access_token']}"}, timeout=5)
        wait_for(lambda: metric(GW2_PORT, "gateway_denylist_copy_valid") == 1, "the copy is loaded")
        r = get(s1)
        assert r.status_code == 401 and r.json()["detail"] == "the session was revoked", r.text
        assert get(s2).status_code == 200
        key = f"revoked:sid:{s2['session_id']}"
        cli("SET", key, "1", "PX", "600000")
        cli("PUBLISH", "denylist", f"+{key} 600000")
        cli("PING")
        r = get(s2)
        assert r.status_code == 401 and r.json()["detail"] == "the session was revoked", r.text
        cli("DEL", key)
        cli("PUBLISH", "denylist", f"-{key}")
        cli("PING")
        assert get(s2).status_code == 200
        assert metric(GW2_PORT, "gateway_denylist_copy_unknown_total") == 0
        own_redis.terminate()
        own_redis.wait(10)
        wait_for(lambda: metric(GW2_PORT, "gateway_denylist_copy_valid") == 0, "the copy is dropped")
        r = get(s2)
        assert r.status_code == 503 and "session state" in r.json()["detail"], r.text
        second = redis_server(REDIS_PORT)
        cli("SET", key, "1", "PX", "600000")  # before or after the copy is back: the load or the message has it
        cli("PUBLISH", "denylist", f"+{key} 600000")
        cli("PING")
        wait_for(lambda: metric(GW2_PORT, "gateway_denylist_copy_valid") == 1, "the copy is loaded again")
        r = get(s2)
        assert r.status_code == 401 and r.json()["detail"] == "the session was revoked", r.text
        assert metric(GW2_PORT, "gateway_denylist_copy_loads_total") >= 2
    finally:
        gw.stop()
        if second:
            second.terminate()
            second.wait(10)
    sanitizer_clean(gw)


def test_route_auth_kinds_and_caps(echo_gateway):
    r = requests.get(echo_gateway + "/secure-echo", timeout=5)
    assert r.status_code == 401 and r.headers["Content-Type"] == "application/problem+json", r.text
    r = requests.get(echo_gateway + "/admin-echo", headers={"X-Admin-Key": ADMIN_KEY + "x"}, timeout=5)
    assert r.status_code == 401 and "admin key" in r.json()["detail"], r.text
    assert requests.get(echo_gateway + "/admin-echo", headers={"X-Admin-Key": ADMIN_KEY}, timeout=5).status_code == 200
    r = requests.get(echo_gateway + "/tenant-echo", timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), r.text
    assert requests.get(echo_gateway + "/tenant-echo", auth=("k", "s"), timeout=5).status_code == 200
    # The route's own body cap: 413 before the body is read.
    r = requests.post(echo_gateway + "/tenant-echo", auth=("k", "s"), data=b"x" * 1001, timeout=5)
    assert r.status_code == 413 and "1000 bytes" in r.json()["detail"], r.text
    assert requests.post(echo_gateway + "/tenant-echo", auth=("k", "s"), data=b"x" * 1000, timeout=5).status_code == 200
    # Headers over HTTP_MAX_HEADER_BYTES: refused (431), the gateway lives on.
    r = requests.get(echo_gateway + "/echo", headers={"X-Big": "a" * 9000}, timeout=5)
    assert r.status_code == 431, r.status_code
    assert requests.get(echo_gateway + "/echo", timeout=5).status_code == 200


@pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="slowhttptest not installed (deploy/deps.sh)")
def test_slowloris_does_not_starve_normal_clients(platform):
    """slowhttptest (slow headers) from 127.0.0.1 holds as many connections as it may; clients
    from another address keep being answered promptly, and the attacker gets no more than its
    per-address share."""
    gw = gateway(GW2_PORT, {"HTTP_MAX_CONNECTIONS_PER_IP": "64", "HTTP_IDLE_TIMEOUT_S": "5"}, "gateway-slowloris")
    attack = subprocess.Popen(["slowhttptest", "-H", "-c", "400", "-r", "200", "-i", "2", "-l", "8", "-p", "3",
                               "-u", f"http://127.0.0.1:{GW2_PORT}/.well-known/jwks.json"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)  # the attack at full strength
        held = int(subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{GW2_PORT} )"],
                                  capture_output=True, text=True).stdout.count("\n"))
        slowest = 0.0
        for _ in range(40):
            t = time.time()
            c = http.client.HTTPConnection("127.0.0.1", GW2_PORT, timeout=5, source_address=("127.0.0.2", 0))
            c.request("GET", "/.well-known/jwks.json")
            r = c.getresponse()
            r.read()
            c.close()
            assert r.status == 200, r.status
            slowest = max(slowest, time.time() - t)
            time.sleep(0.05)
        assert slowest < 1.0, slowest
        assert held <= 64 + 2, held  # the attacker's connections (+ ours) stay at its share
        out, _ = attack.communicate(timeout=30)
        assert attack.returncode == 0, out
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
        gw.stop()
    sanitizer_clean(gw)


def test_a_tenant_lowers_its_users_api_rate(platform, api):
    """api_rate_per_min (a tenant setting) lowers the user bucket below the platform's
    RATELIMIT_USER for that tenant's users only; it never raises it."""
    gw = gateway(GW2_PORT, {"RATELIMIT_USER": "0.2/5", "TENANT_SETTINGS_TTL_MS": "500"}, "gateway-rl-tenant")
    try:
        strict, loose = new_tenant(api), new_tenant(api)
        for t, per_min in ((strict, 6), (loose, 1000000)):
            r = api.call("PATCH", f"/v1/tenants/{t['id']}", body={"settings": {"api_rate_per_min": per_min}},
                         headers={"X-Admin-Key": ADMIN_KEY})
            assert r.status_code == 200, r.text
        url = f"http://127.0.0.1:{GW2_PORT}/v1/conversations"
        s = token_for(api, strict, "s1")
        codes = [requests.get(url, headers={"Authorization": f"Bearer {s}"}, timeout=5) for _ in range(2)]
        assert [r.status_code for r in codes] == [200, 429], [r.text for r in codes]  # 6/min: burst 1
        assert "user" in codes[1].json()["detail"] and codes[1].headers["RateLimit-Limit"] == "1"
        # 1,000,000 a minute is more than the platform allows: its 0.2/s with a burst of 5 holds.
        lo = token_for(api, loose, "l1")
        codes = [requests.get(url, headers={"Authorization": f"Bearer {lo}"}, timeout=5) for _ in range(6)]
        assert [r.status_code for r in codes] == [200] * 5 + [429], [r.text for r in codes]
        assert codes[5].headers["RateLimit-Limit"] == "5"
    finally:
        gw.stop()
    sanitizer_clean(gw)


class Slow(http.server.BaseHTTPRequestHandler):
    """An upstream whose /slow answers take 0.6 s; it records how many it held at once."""
    lock = threading.Lock()
    now = 0
    most = 0

    def do_GET(self):
        slow = self.path.startswith("/slow")
        if slow:
            with Slow.lock:
                Slow.now += 1
                Slow.most = max(Slow.most, Slow.now)
            time.sleep(0.6)
            with Slow.lock:
                Slow.now -= 1
        body = b'{"slow": true}' if slow else b'{"slow": false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_upstream_calls_hold_no_server_thread_and_wait_their_turn_per_pool(platform):
    """Requests under way upstream hold no server thread (two of them serve a third request at
    once while six wait on a slow upstream); a pool gets at most UPSTREAM_MAX_INFLIGHT at a time,
    the others wait in the gateway without their attempt timeout running (1 s each, 1.8 s in
    all), and another pool is not held up by it."""
    Slow.now = Slow.most = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", ECHO_PORT), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gw = gateway(GW2_PORT, {"GATEWAY_POOLS": f"slow=http://127.0.0.1:{ECHO_PORT} health=off; "
                                             f"fast=http://127.0.0.1:{ECHO_PORT} health=off",
                            "GATEWAY_ROUTES": "/slow slow auth=none timeout_ms=1000; /fast fast auth=none",
                            "HTTP_THREADS": "2", "UPSTREAM_MAX_INFLIGHT": "2", "RETRY_MAX": "0"},
                 "gateway-inflight")
    base = f"http://127.0.0.1:{GW2_PORT}"
    try:
        results = []

        def call(i):
            r = requests.get(f"{base}/slow/{i}", timeout=10)
            results.append((r.status_code, r.text))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.3)
        f0 = time.monotonic()
        r = requests.get(f"{base}/fast/x", timeout=10)
        assert r.status_code == 200 and r.json() == {"slow": False}, r.text
        assert time.monotonic() - f0 < 0.5, "a request of another pool waited for the slow ones"
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        assert [c for c, _ in results] == [200] * 6, results
        assert Slow.most == 2, Slow.most
        assert took >= 1.7, took  # three rounds of two
    finally:
        gw.stop()
        srv.shutdown()
        srv.server_close()
    sanitizer_clean(gw)
