"""Resumable uploads (tus 1.0) through the gateway: tus-js-client from Node uploads a file in
chunks, is interrupted, and resumes where the server says it stopped; the protocol's rules
(offsets, checksums, termination, expiry, versions) checked with plain HTTP."""

import base64
import hashlib
import json
import os
import pathlib
import subprocess
import time

import pytest
import requests

from conftest import GATEWAY, INTERNAL_HEADERS, PORTS, ROOT, token_for
from media_util import admin_token, make_image, wait_status
from test_media import media_db, problem

NODE_DIR = ROOT / ".local" / "node"
SCRIPT = ROOT / "tests" / "tus" / "upload.js"
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def alice(api, tenant):
    return token_for(api, tenant, "alice")


def node_upload(token, path, chunk, stop_after="-", url=None):
    args = ["node", str(SCRIPT), GATEWAY + "/v1/uploads", token, str(path), str(chunk), stop_after]
    if url:
        args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules")))
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    assert lines, out.stdout + out.stderr
    return json.loads(lines[-1])


def head(token, url):
    return requests.head(url, headers=dict(TUS, Authorization=f"Bearer {token}"), timeout=10)


def test_tus_js_client_upload_interrupted_and_resumed(api, alice, tmp_path):
    data = b"%PDF-1.4\n" + os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    chunk = 256 * 1024
    first = node_upload(alice, path, chunk, stop_after=str(5 * chunk))
    assert first["status"] == "aborted", first
    url = first["url"]
    assert url.startswith(GATEWAY + "/v1/uploads/"), url
    # Progress is what HEAD says: a whole number of acknowledged chunks, short of the end.
    h = head(alice, url)
    assert h.status_code == 200, h.text
    assert h.headers["Tus-Resumable"] == "1.0.0" and h.headers["Cache-Control"] == "no-store"
    offset = int(h.headers["Upload-Offset"])
    assert int(h.headers["Upload-Length"]) == len(data)
    assert offset >= 5 * chunk and offset < len(data) and offset % chunk == 0, offset
    assert "GMT" in h.headers["Upload-Expires"]

    second = node_upload(alice, path, chunk, url=url)
    assert second["status"] == "done", second
    h = head(alice, url)
    assert int(h.headers["Upload-Offset"]) == len(data)
    media_id = url.rsplit("/", 1)[1]
    m = wait_status(api, alice, media_id)
    assert m["status"] == "processed" and m["size"] == len(data)
    assert m["content_type"] == "application/pdf" and m["filename"] == "report.pdf"
    got = api.call("GET", f"/v1/media/{media_id}/content", token=alice)
    assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    # A range across the boundary of two PATCH parts is byte-exact too.
    r = api.call("GET", f"/v1/media/{media_id}/content", token=alice,
                 headers={"Range": f"bytes={offset - 10}-{offset + 10}"})
    assert r.status_code == 206 and r.content == data[offset - 10:offset + 11]
    # The parts became the media object: no part records remain.
    assert media_db().upload_parts.count_documents({"upload_id": media_id}) == 0


def test_tus_image_gets_thumbnails(api, alice, tmp_path):
    jpeg = make_image(tmp_path / "t", 700, 350)
    path = tmp_path / "pic.jpg"
    path.write_bytes(jpeg)
    res = node_upload(alice, path, 64 * 1024)
    assert res["status"] == "done", res
    m = wait_status(api, alice, res["url"].rsplit("/", 1)[1])
    assert m["status"] == "processed"
    assert {v["name"]: (v["width"], v["height"]) for v in m["variants"]}["thumb_128"] == (128, 64)


def create(token, length, meta=None, **hdrs):
    h = dict(TUS, Authorization=f"Bearer {token}", **{"Upload-Length": str(length)})
    if meta:
        h["Upload-Metadata"] = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
    h.update(hdrs)
    return requests.post(GATEWAY + "/v1/uploads", headers=h, timeout=10)


def patch(token, url, offset, body, **hdrs):
    h = dict(TUS, Authorization=f"Bearer {token}", **{"Upload-Offset": str(offset),
                                                       "Content-Type": "application/offset+octet-stream"})
    h.update(hdrs)
    return requests.patch(url, data=body, headers=h, timeout=10)


def test_tus_protocol_rules(api, tenant, alice):
    body = b"%PDF-1.4\n" + os.urandom(1000)
    r = requests.options(GATEWAY + "/v1/uploads", headers={"Authorization": f"Bearer {alice}"}, timeout=10)
    assert r.status_code == 204
    assert r.headers["Tus-Version"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {"creation", "termination", "expiration", "checksum"}
    assert r.headers["Tus-Checksum-Algorithm"] == "sha1"

    problem(create(alice, 10, **{"Tus-Resumable": "0.2.2"}), 412, "tus-version")
    problem(create(alice, "x"), 400, "validation", "Upload-Length")
    problem(create(alice, 10, meta=None, **{"Upload-Metadata": "filename !!"}), 400, "validation")
    problem(create(alice, 200 * 1024 * 1024), 413, "too-large")

    r = create(alice, len(body), {"filename": "x.pdf"})
    assert r.status_code == 201, r.text
    url = GATEWAY + r.headers["Location"]
    assert head(alice, url).headers["Upload-Offset"] == "0"
    # Wrong content type, wrong offset, bad checksum: refused, nothing stored.
    problem(patch(alice, url, 0, body[:100], **{"Content-Type": "application/octet-stream"}), 415)
    problem(patch(alice, url, 5, body[:100]), 409, "offset-mismatch")
    sha_other = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    problem(patch(alice, url, 0, body[:100], **{"Upload-Checksum": f"sha1 {sha_other}"}), 460, "checksum-mismatch")
    problem(patch(alice, url, 0, body[:100], **{"Upload-Checksum": "md5 abc="}), 400)
    assert head(alice, url).headers["Upload-Offset"] == "0"
    # A correct checksum is accepted.
    sha = base64.b64encode(hashlib.sha1(body[:100]).digest()).decode()
    r = patch(alice, url, 0, body[:100], **{"Upload-Checksum": f"sha1 {sha}"})
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "100"
    problem(patch(alice, url, 100, body[100:] + b"extra"), 400, "validation", "past Upload-Length")
    # Other users and other tenants do not see the upload.
    bob = token_for(api, tenant, "bob")
    assert head(bob, url).status_code == 404
    problem(patch(bob, url, 100, body[100:]), 404)
    # Termination.
    r = requests.delete(url, headers=dict(TUS, Authorization=f"Bearer {alice}"), timeout=10)
    assert r.status_code == 204
    assert head(alice, url).status_code == 404
    assert media_db().upload_parts.count_documents({"upload_id": url.rsplit("/", 1)[1]}) == 0


def test_tus_refuses_an_executable_at_the_end_and_keeps_nothing(api, tenant, alice):
    exe = open("/bin/ls", "rb").read()
    r = create(alice, len(exe), {"filename": "photo.png"})
    url = GATEWAY + r.headers["Location"]
    half = len(exe) // 2
    assert patch(alice, url, 0, exe[:half]).status_code == 204
    problem(patch(alice, url, half, exe[half:]), 415, "unsupported-media-type")
    assert head(alice, url).status_code == 404
    uid = url.rsplit("/", 1)[1]
    assert media_db().upload_parts.count_documents({"upload_id": uid}) == 0
    assert media_db().media.count_documents({"_id": uid}) == 0


def test_expired_uploads_are_gone(api, alice):
    r = create(alice, 50)
    url = GATEWAY + r.headers["Location"]
    uid = url.rsplit("/", 1)[1]
    assert patch(alice, url, 0, b"%PDF-1.4\n12345").status_code == 204
    key = media_db().upload_parts.find_one({"upload_id": uid})["key"]
    media_db().uploads.update_one({"_id": uid}, {"$set": {"expires_at": media_db().uploads.find_one({"_id": uid})["created_at"]}})
    assert head(alice, url).status_code == 404
    r = requests.post(f"http://127.0.0.1:{PORTS['media']}/internal/v1/jobs/run", headers=INTERNAL_HEADERS,
                      timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] >= 1
    assert media_db().uploads.count_documents({"_id": uid}) == 0
    assert media_db()["media.files"].count_documents({"_id": key}) == 0
