"""Helpers for the media tests: real images made with Debian's vips and exiftool tools, tokens,
waiting for processing."""

import json
import subprocess
import struct
import time
import zlib

import jwt as pyjwt

from conftest import KEYS

PRIVATE = (KEYS / "jwt-private.pem").read_bytes()


def make_image(path, width, height, fmt="jpg"):
    """Writes a noisy colour image (so sizes are realistic) with libvips' own CLI."""
    noise = str(path) + ".v"
    subprocess.run(["vips", "gaussnoise", noise, str(width), str(height)], check=True)
    subprocess.run(["vips", "bandjoin", f"{noise} {noise} {noise}", str(path) + ".rgb.v"], check=True)
    subprocess.run(["vips", "colourspace", str(path) + ".rgb.v", str(path) + f".{fmt}", "srgb"],
                   check=True)
    data = open(str(path) + f".{fmt}", "rb").read()
    return data


def add_gps(path):
    """Adds GPS and camera EXIF tags to a JPEG with exiftool, in place."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-GPSLatitude=48.8584",
                    "-GPSLatitudeRef=N", "-GPSLongitude=2.2945", "-GPSLongitudeRef=E",
                    "-Make=TestCam", "-Artist=Someone", str(path)], check=True)


def exif_tags(data, tmp_path, name):
    """Every tag exiftool reads from `data`, as a dict (group:tag -> value)."""
    p = tmp_path / name
    p.write_bytes(data)
    out = subprocess.run(["exiftool", "-j", "-G", "-a", str(p)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]


def dimensions(data, tmp_path, name):
    p = tmp_path / name
    p.write_bytes(data)
    w = subprocess.run(["vipsheader", "-f", "width", str(p)], check=True, capture_output=True,
                       text=True).stdout.strip()
    h = subprocess.run(["vipsheader", "-f", "height", str(p)], check=True, capture_output=True,
                       text=True).stdout.strip()
    return int(w), int(h)


def huge_png(width, height):
    """A valid 8-bit greyscale PNG of width x height zero pixels, made with zlib row by row
    (tiny on disk, width*height bytes when decoded)."""
    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [z.compress(row) for _ in range(height)]
    parts.append(z.flush())
    idat = b"".join(parts)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def admin_token(tenant_id, user="admin-1"):
    now = int(time.time())
    c = {"sub": user, "tid": tenant_id, "sid": "s-admin", "roles": ["member", "admin"],
         "iss": "chat-platform", "aud": "chat-api", "iat": now, "nbf": now, "exp": now + 600}
    return pyjwt.encode(c, PRIVATE, algorithm="RS256", headers={"kid": "k1"})


def wait_status(api, token, media_id, want=("processed", "failed"), timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = api.call("GET", f"/v1/media/{media_id}", token=token)
        assert r.status_code == 200, r.text
        if r.json()["status"] in want:
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"media {media_id} still {r.json()['status']} after {timeout}s")


def upload(api, token, data, content_type="application/octet-stream", **params):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return api.call("POST", "/v1/media" + (f"?{q}" if q else ""), token=token, raw=data,
                    headers={"Content-Type": content_type})


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def vm_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
