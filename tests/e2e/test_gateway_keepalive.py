"""Client keep-alive through the gateway, against real processes and raw sockets: a kept-alive
connection stays usable across idle pauses shorter than the gateway's idle timeout, under
concurrent traffic and whatever the upstream path does with the request meanwhile (the
event-driven path answers from another thread); a connection idle longer is closed cleanly
(FIN, never a reset, never after the gateway accepted the next request)."""

import http.server
import os
import socket
import threading
import time

from test_gateway_edge import ECHO_PORT, GW2_PORT, gateway, sanitizer_clean

JWKS = "/.well-known/jwks.json"  # proxied to the user service, no token


class Conn:
    """One client connection speaking HTTP/1.1 keep-alive by hand, so that what the server does
    to it (answer, FIN, reset) is seen as it is, with no client library reconnecting."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.local = self.sock.getsockname()
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)  # ConnectionResetError on a reset
        if not data:
            raise EOFError("the gateway closed the connection")
        self.buf += data

    def get(self, path):
        """Sends one GET and reads its answer: (status, headers dict, body)."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def wait_closed(self, limit):
        """Waits up to `limit` s for the server to close: 'fin', 'reset' or 'open'."""
        self.sock.settimeout(limit)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "open"
        return "fin" if data == b"" else f"data {data!r}"

    def close(self):
        self.sock.close()


def test_kept_alive_connections_survive_idle_pauses_under_traffic(platform):
    """Eight connections, each used for bursts of requests separated by pauses from a tenth of
    a second to 9 s (the gateway's default idle timeout is 15 s), while two more keep the server
    busy: every request is answered on the connection it was sent on. (Rate limits off: the two
    busy connections would otherwise empty the address's bucket.)"""
    gw = gateway(GW2_PORT, {}, "gateway-keepalive-busy")
    port = GW2_PORT
    failures, answered = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def client(i):
        c = Conn(port)
        pauses = [0.1 * (i + 1), 0.5 + 0.2 * i, 1.5 + 0.4 * i, 3 + 0.3 * i, 6 + 0.4 * i]
        n = 0
        try:
            for burst, pause in enumerate([0.0] + pauses):
                time.sleep(pause)
                for k in range(20 if burst == 0 else 3):
                    status, _, body = c.get(JWKS)
                    assert status == 200 and b'"keys"' in body, (status, body[:200])
                    n += 1
            assert c.sock.getsockname() == c.local
        except (OSError, EOFError, AssertionError) as e:
            with lock:
                failures.append(f"client {i}: request {n + 1} after {burst} pauses: {e!r}")
        finally:
            c.close()
            with lock:
                answered.append(n)

    def busy(i):
        c = Conn(port)
        try:
            while not stop.is_set():
                status, _, _ = c.get(JWKS)
                assert status == 200, status
        except (OSError, EOFError, AssertionError) as e:
            with lock:
                failures.append(f"busy {i}: {e!r}")
        finally:
            c.close()

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    busies = [threading.Thread(target=busy, args=(i,)) for i in range(2)]
    for t in clients + busies:
        t.start()
    for t in clients:
        t.join()
    stop.set()
    for t in busies:
        t.join()
    gw.stop()
    assert failures == [], failures
    assert answered == [35] * 8, answered
    sanitizer_clean(gw)


class Slow(http.server.BaseHTTPRequestHandler):
    """An upstream whose /slow answers take 2.5 s, longer than the gateway's idle timeout here."""

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2.5)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_idle_timeout_counts_idleness_and_closes_cleanly(platform):
    """With HTTP_IDLE_TIMEOUT_S=2: a connection used every 1.2 s lives past 2 s (the timeout
    counts idleness, not age); a request whose upstream takes 2.5 s is answered, and its
    connection is not timed out for the time the request was under way (nor is another
    connection kept waiting by it); a connection idle
    longer than 2 s is closed with a FIN, not a reset, and none is closed early."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", ECHO_PORT), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gw = gateway(GW2_PORT, {"GATEWAY_POOLS": f"slow=http://127.0.0.1:{ECHO_PORT} health=off",
                            "GATEWAY_ROUTES": "/slow slow auth=none timeout_ms=5000; /fast slow auth=none",
                            "HTTP_IDLE_TIMEOUT_S": "2", "RETRY_MAX": "0"}, "gateway-keepalive")
    try:
        c = Conn(GW2_PORT)
        for _ in range(4):  # 4.8 s in all, never 2 s idle
            assert c.get("/fast/x")[0] == 200
            time.sleep(1.2)
        got = []
        slow = threading.Thread(target=lambda: got.append(c.get("/slow/x")[0]))
        slow.start()  # 2.5 s upstream: the connection is busy, not idle
        time.sleep(0.3)
        d = Conn(GW2_PORT)
        t = time.monotonic()
        assert d.get("/fast/x")[0] == 200  # a request under way upstream holds up nobody else
        assert time.monotonic() - t < 1.0
        d.close()
        slow.join()
        assert got == [200], got
        time.sleep(0.5)
        assert c.get("/fast/x")[0] == 200  # and stays usable at once afterwards
        t = time.monotonic()
        outcome = c.wait_closed(6)
        idle = time.monotonic() - t
        assert outcome == "fin", outcome
        assert 1.5 <= idle <= 4.5, idle
        c.close()

        # Many short requests whose answers come from the upstream loop, each followed by an
        # idle pause just under the timeout, on several connections at once.
        conns = [Conn(GW2_PORT) for _ in range(6)]
        for _ in range(3):
            for c in conns:
                for _ in range(5):
                    assert c.get("/fast/y")[0] == 200
            time.sleep(1.5)
        for c in conns:
            assert c.get("/fast/z")[0] == 200
            c.close()
    finally:
        gw.stop()
        srv.shutdown()
        srv.server_close()
    sanitizer_clean(gw)


def test_threads_run_as_sched_batch_unless_turned_off(platform):
    """GATEWAY_SCHED_BATCH (1 by default): every thread of the gateway runs as SCHED_BATCH, so
    a thread woken by a hand-over or a resume does not preempt the one that woke it
    (gateway/README.md, issue 6h); with 0 they stay SCHED_OTHER."""
    gw = gateway(GW2_PORT, {"GATEWAY_SCHED_BATCH": "0"}, "gateway-sched-normal")
    try:
        for pid, want in ((platform["gateway"].proc.pid, os.SCHED_BATCH), (gw.proc.pid, os.SCHED_OTHER)):
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            assert len(tids) > 3, tids  # server threads, the upstream loop, timers started
            assert {os.sched_getscheduler(t) for t in tids} == {want}, (pid, want)
    finally:
        gw.stop()
    sanitizer_clean(gw)
