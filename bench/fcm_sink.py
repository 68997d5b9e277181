"""A fast local stand-in for FCM HTTP v1 for bench/notification_bench.py: an asyncio HTTP/1.1
server (keep-alive, no framework) that answers the OAuth 2.0 token exchange with a fixed access
token and every POST /v1/projects/<p>/messages:send with 200, recording the arrival time and
body of each send. It checks nothing (tests/e2e/push_provider.py is the checking one).

    python bench/fcm_sink.py PORT
GET /stats answers {"sends": n}; POST /dump?path=FILE writes the recorded sends as JSON lines
[arrival_unix_s, body] to FILE; POST /reset forgets them."""

import asyncio
import json
import sys
import time

RECORDS = []
TOKEN = json.dumps({"access_token": "ya29.bench", "expires_in": 3599, "token_type": "Bearer"}).encode()
SENT = b'{"name": "projects/bench/messages/1"}'


def reply(status, body, ctype=b"application/json"):
    return (b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, ctype, len(body))) + body


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if len(self.buf) < end + 4 + length:
                break
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            out.append(self.handle(method, path, body))
        if out:
            self.t.write(b"".join(out))

    def handle(self, method, path, body):
        if path.startswith("/v1/projects/"):
            RECORDS.append((time.time(), body))
            return reply(200, SENT)
        if path == "/token":
            return reply(200, TOKEN)
        if path == "/stats":
            return reply(200, json.dumps({"sends": len(RECORDS)}).encode())
        if path.startswith("/dump?path="):
            with open(path[len("/dump?path="):], "w") as f:
                for at, b in RECORDS:
                    f.write(json.dumps([at, b.decode()]) + "\n")
            return reply(200, b"{}")
        if path == "/reset":
            RECORDS.clear()
            return reply(200, b"{}")
        return reply(404, b"{}")


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
