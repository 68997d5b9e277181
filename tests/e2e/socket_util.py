"""Helpers for the socket tests: socket instances on their own ports, and a WebSocket client
(the real `websockets` library) that collects frames."""

import asyncio
import json
import struct
import socket as pysocket

import websockets

from conftest import PORTS, Service

# Instance 1 listens for WebSockets on base+3, instance 2 on base+5; their HTTP sides (health,
# metrics) on base+6 and base+7. test_socket_limits's instances 3 and 4: base+13/+14, +15/+16.
WS_PORTS = (PORTS["socket"], PORTS["socket"] + 2, PORTS["socket"] + 10, PORTS["socket"] + 12)
HTTP_PORTS = (PORTS["socket"] + 3, PORTS["socket"] + 4, PORTS["socket"] + 11,
              PORTS["socket"] + 13)


def socket_instance(i, **env):
    s = Service("socket", {"WS_PORT": str(WS_PORTS[i]), "HTTP_PORT": str(HTTP_PORTS[i]),
                           "PING_S": "5", "IDLE_TIMEOUT_S": "15", **env})
    s.port = HTTP_PORTS[i]
    s.log_path = s.log_path.with_name(f"socket-{i + 1}.log")
    return s


def ws_url(i, token=None, since=None):
    q = []
    if token:
        q.append(f"access_token={token}")
    if since:
        q.append(f"since={since}")
    return f"ws://127.0.0.1:{WS_PORTS[i]}/v1/ws" + ("?" + "&".join(q) if q else "")


def raw_connect(port, token, since=None, rcvbuf=None):
    """A bare TCP WebSocket client (no library answering or reading behind the test's back),
    upgraded on /v1/ws of `port`: to send frames no library would send, or to stop reading.
    `rcvbuf` shrinks its receive buffer before connecting, so a reader that stalls stalls the
    server soon."""
    s = pysocket.socket(pysocket.AF_INET, pysocket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    q = f"access_token={token}" + (f"&since={since}" if since else "")
    s.sendall((f"GET /v1/ws?{q} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def read_frames(s, timeout=10.0):
    """Reads server frames until a close frame or EOF: ([(opcode, payload)...], the close code,
    None when the connection ended without a close frame, or "timeout")."""
    s.settimeout(timeout)
    buf, out = b"", []
    while True:
        while len(buf) >= 2:
            op, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            if op == 8:
                return out, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            out.append((op, payload))
        try:
            chunk = s.recv(65536)
        except pysocket.timeout:
            return out, "timeout"
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return out, None
        buf += chunk


class Client:
    """One WebSocket connection; frames are read by a background task into `frames`."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []
        self.closed = None
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, i, token, since=None, **kw):
        return cls(await websockets.connect(ws_url(i, token, since), max_size=2**22, **kw))

    async def _read(self):
        try:
            async for m in self.ws:
                self.frames.append(json.loads(m))
        except websockets.ConnectionClosed:
            pass
        self.closed = self.ws.close_code

    async def send(self, **frame):
        await self.ws.send(json.dumps(frame))

    async def wait(self, pred, timeout=15.0):
        """Waits until a frame matching `pred` arrived; returns it."""
        deadline = asyncio.get_event_loop().time() + timeout
        while True:
            for f in self.frames:
                if pred(f):
                    return f
            if asyncio.get_event_loop().time() > deadline:
                raise AssertionError(f"no matching frame in {timeout}s; got {self.frames[-5:]}")
            await asyncio.sleep(0.02)

    async def ack(self, id_, status, timeout=15.0):
        return await self.wait(lambda f: f.get("type") == "ack" and f.get("id") == id_
                               and f.get("status") == status, timeout)

    def events(self, type_="message.created", cid=None):
        return [f for f in self.frames if f.get("type") == type_
                and (cid is None or f.get("conversation_id") == cid)]

    def cursor(self):
        for f in reversed(self.frames):
            if "cursor" in f:
                return f["cursor"]
        return None

    async def close(self):
        await self.ws.close()
        await self.task
