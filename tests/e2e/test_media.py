"""The media service through the gateway with real clients: uploads (raw and multipart), type
from the bytes, thumbnails, EXIF/GPS stripping, the pixel cap, ranges, conditional requests,
tenant isolation and the events on the `media` topic."""

import hashlib
import os
import subprocess
import time

import pytest

from conftest import DBS, MONGO_URI, new_tenant, read_events, token_for
from media_util import (add_gps, admin_token, dimensions, exif_tags, huge_png, make_image,
                        upload, vm_hwm_kib, vm_rss_kib, wait_status)

import pymongo


@pytest.fixture
def users(api, tenant):
    return {"alice": token_for(api, tenant, "alice"), "bob": token_for(api, tenant, "bob")}


def problem(r, status, slug=None, detail=None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert p["status"] == status
    if slug:
        assert p["type"] == f"urn:chat:problem:{slug}", p
    if detail:
        assert detail in p["detail"], p
    return p


def media_db():
    return pymongo.MongoClient(MONGO_URI)[DBS["media"]]


def test_raw_upload_type_from_bytes_metadata_and_isolation(api, tenant, users, tmp_path):
    since = int(time.time() * 1000)
    jpeg = make_image(tmp_path / "a", 300, 200)
    # The client's header says text/plain: the bytes decide.
    r = upload(api, users["alice"], jpeg, "text/plain", filename="cat.jpg")
    assert r.status_code == 201, r.text
    m = r.json()
    assert r.headers["Location"] == f"/v1/media/{m['id']}"
    assert m["content_type"] == "image/jpeg" and m["kind"] == "image"
    assert m["size"] == len(jpeg) and m["uploader"] == "alice" and m["filename"] == "cat.jpg"
    assert (m["width"], m["height"]) == (300, 200)
    assert m["status"] in ("pending", "processed")

    done = wait_status(api, users["alice"], m["id"])
    assert done["status"] == "processed", done
    # Another user of the tenant, and another tenant's user: 404, never 403.
    problem(api.call("GET", f"/v1/media/{m['id']}", token=users["bob"]), 404, "not-found")
    other = new_tenant(api)
    eve = token_for(api, other, "alice")  # same user id, other tenant
    for path in (f"/v1/media/{m['id']}", f"/v1/media/{m['id']}/content",
                 f"/v1/media/{m['id']}/url"):
        problem(api.call("GET", path, token=eve), 404, "not-found")
    problem(api.call("DELETE", f"/v1/media/{m['id']}", token=eve), 404)
    # A tenant admin sees it.
    assert api.call("GET", f"/v1/media/{m['id']}", token=admin_token(tenant["id"])).status_code == 200

    evs = read_events("media", lambda e: sum(1 for x in e if x["subject"] == m["id"]) >= 2, since)
    mine = [e for e in evs if e["subject"] == m["id"]]
    types = [e["type"] for e in mine]
    assert types[:2] == ["media.uploaded", "media.processed"], types
    assert all(e["tenant"] == tenant["id"] and e["_key"] == m["id"] for e in mine)
    processed = mine[1]["data"]
    assert {v["name"] for v in processed["variants"]} == {"original", "thumb_128", "thumb_512",
                                                         "thumb_1024"}


def test_multipart_upload_keeps_the_file_name(api, users, tmp_path):
    png = make_image(tmp_path / "p", 40, 30, "png")
    r = api.call("POST", "/v1/media", token=users["alice"],
                 headers=None, body=None) if False else None
    r = api.http.post(api.base + "/v1/media", headers={"Authorization": f"Bearer {users['alice']}"},
                      files={"note": (None, "hi"), "file": ("holiday photo.png", png, "image/png")})
    assert r.status_code == 201, r.text
    assert r.json()["filename"] == "holiday photo.png"
    assert r.json()["content_type"] == "image/png"
    # No part named "file".
    r = api.http.post(api.base + "/v1/media", headers={"Authorization": f"Bearer {users['alice']}"},
                      files={"other": ("x.png", png, "image/png")})
    problem(r, 400, "validation", "no part named 'file'")


def test_thumbnails_have_the_right_sizes(api, users, tmp_path):
    big = make_image(tmp_path / "big", 1600, 1000)
    small = make_image(tmp_path / "small", 100, 50)
    tall = make_image(tmp_path / "tall", 600, 1200, "png")
    want = {
        "big": {"original": (1600, 1000), "thumb_128": (128, 80), "thumb_512": (512, 320),
                "thumb_1024": (1024, 640)},
        "small": {"original": (100, 50), "thumb_128": (100, 50), "thumb_512": (100, 50),
                  "thumb_1024": (100, 50)},  # never enlarged
        "tall": {"original": (600, 1200), "thumb_128": (64, 128), "thumb_512": (256, 512),
                 "thumb_1024": (512, 1024)},
    }
    for name, data in (("big", big), ("small", small), ("tall", tall)):
        r = upload(api, users["alice"], data)
        assert r.status_code == 201, r.text
        m = wait_status(api, users["alice"], r.json()["id"])
        assert m["status"] == "processed", m
        listed = {v["name"]: (v["width"], v["height"]) for v in m["variants"]}
        assert listed == want[name], (name, listed)
        for variant, dims in want[name].items():
            c = api.call("GET", f"/v1/media/{m['id']}/content?variant={variant}", token=users["alice"])
            assert c.status_code == 200, c.text
            assert c.headers["Content-Type"] == m["content_type"]
            assert dimensions(c.content, tmp_path, f"{name}-{variant}") == dims, (name, variant)


def test_no_gps_or_exif_in_any_served_variant(api, users, tmp_path):
    make_image(tmp_path / "gps", 900, 700)
    path = tmp_path / "gps.jpg"
    add_gps(path)
    data = path.read_bytes()
    before = exif_tags(data, tmp_path, "src.jpg")
    assert any(k.startswith("EXIF:GPS") for k in before), before  # the test's own premise
    assert before.get("EXIF:Make") == "TestCam"
    r = upload(api, users["alice"], data, "image/jpeg")
    assert r.status_code == 201, r.text
    m = wait_status(api, users["alice"], r.json()["id"])
    assert m["status"] == "processed", m
    url = api.call("GET", f"/v1/media/{m['id']}/url?variant=thumb_512", token=users["alice"]).json()["url"]
    served = {"signed thumb_512": api.http.get(api.base + url).content}
    for v in ("original", "thumb_128", "thumb_512", "thumb_1024"):
        served[v] = api.call("GET", f"/v1/media/{m['id']}/content?variant={v}", token=users["alice"]).content
    for name, body in served.items():
        tags = exif_tags(body, tmp_path, name.replace(" ", "_") + ".jpg")
        gps = [k for k in tags if "GPS" in k]
        assert not gps, (name, gps)
        assert "EXIF:Make" not in tags and "EXIF:Artist" not in tags, (name, tags)
        assert tags.get("File:FileType") == "JPEG"


def test_executable_renamed_png_is_refused(api, tenant, users):
    exe = open("/bin/ls", "rb").read()
    r = upload(api, users["alice"], exe, "image/png", filename="innocent.png")
    p = problem(r, 415, "unsupported-media-type")
    assert "application/x-" in p["detail"], p
    # Multipart with an image file name: same answer, nothing stored.
    r = api.http.post(api.base + "/v1/media", headers={"Authorization": f"Bearer {users['alice']}"},
                      files={"file": ("innocent.png", exe, "image/png")})
    problem(r, 415, "unsupported-media-type")
    assert media_db().media.count_documents({"tenant": tenant["id"]}) == 0
    assert media_db()["media.files"].count_documents({"length": len(exe)}) == 0


def test_huge_png_is_refused_before_decoding(api, platform, users):
    data = huge_png(20000, 20000)
    assert len(data) < 2 * 1024 * 1024  # small on the wire, 400 MB once decoded
    pid = platform["media"].proc.pid
    rss0 = vm_rss_kib(pid)
    hwm0 = vm_hwm_kib(pid)
    r = upload(api, users["alice"], data, "image/png")
    p = problem(r, 422, "too-many-pixels")
    assert "20000x20000" in p["detail"], p
    grew = vm_hwm_kib(pid) - max(hwm0, rss0)
    # Decoding would need at least 400 MB; the header check needs next to nothing.
    assert grew < 64 * 1024, f"peak memory grew by {grew} KiB"


def pdf_bytes(n):
    body = os.urandom(n - 9)
    return b"%PDF-1.4\n" + body


def test_ranges_conditionals_and_safety_headers(api, users):
    data = pdf_bytes(300_000)
    r = upload(api, users["alice"], data, "application/pdf", filename='re"port\u00e9.pdf'.encode().decode())
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["content_type"] == "application/pdf" and m["kind"] == "file"
    path = f"/v1/media/{m['id']}/content"
    full = api.call("GET", path, token=users["alice"])
    assert full.status_code == 200 and full.content == data
    h = full.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in h["Content-Security-Policy"] and "default-src 'none'" in h["Content-Security-Policy"]
    assert h["Content-Disposition"].startswith('attachment; filename="re_port_.pdf"'), h["Content-Disposition"]
    assert "filename*=UTF-8''re%22port%C3%A9.pdf" in h["Content-Disposition"]
    assert h["Cache-Control"].startswith("private")
    assert h["Accept-Ranges"] == "bytes"
    etag = h["ETag"]
    assert etag == '"' + hashlib.sha256(data).hexdigest() + '"'
    n = len(data)
    for rng, first, last in (("bytes=0-0", 0, 0), ("bytes=100-199", 100, 199),
                             ("bytes=-500", n - 500, n - 1), ("bytes=299990-", 299990, n - 1),
                             ("bytes=5-999999999", 5, n - 1), ("bytes=261000-262200", 261000, 262200)):
        r = api.call("GET", path, token=users["alice"], headers={"Range": rng})
        assert r.status_code == 206, (rng, r.status_code, r.text[:200])
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{n}", rng
        assert r.content == data[first:last + 1], rng
    for rng in ("bytes=300000-", "bytes=999999-1000000", "bytes=-0"):
        r = api.call("GET", path, token=users["alice"], headers={"Range": rng})
        problem(r, 416, "range-not-satisfiable")
        assert r.headers["Content-Range"] == f"bytes */{n}"
    # Several ranges, another unit, or a malformed header: the whole representation.
    for rng in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc"):
        r = api.call("GET", path, token=users["alice"], headers={"Range": rng})
        assert r.status_code == 200 and r.content == data, rng
    # Conditional requests.
    r = api.call("GET", path, token=users["alice"], headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    r = api.call("GET", path, token=users["alice"], headers={"If-None-Match": f'"x", W/{etag}'})
    assert r.status_code == 304
    r = api.call("GET", path, token=users["alice"], headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.content == data
    r = api.call("GET", path, token=users["alice"], headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    r = api.call("GET", path, token=users["alice"], headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[:10]
    # Files have no thumbnails; unknown variants are refused.
    problem(api.call("GET", path + "?variant=thumb_128", token=users["alice"]), 404)
    problem(api.call("GET", path + "?variant=huge", token=users["alice"]), 400, "validation")


def test_images_are_inline_and_wait_for_processing(api, users, tmp_path):
    jpeg = make_image(tmp_path / "i", 64, 64)
    m = upload(api, users["alice"], jpeg).json()
    m = wait_status(api, users["alice"], m["id"])
    r = api.call("GET", f"/v1/media/{m['id']}/content", token=users["alice"])
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == "inline"
    assert r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_bad_upload_requests(api, users):
    problem(upload(api, users["alice"], b"", "application/pdf"), 400, "validation", "empty")
    r = api.call("POST", "/v1/media", token=users["alice"], raw=b"%PDF-1.4\nabc", headers={"Content-Type": ""})
    problem(r, 415, "unsupported-media-type")
    problem(upload(api, users["alice"], b"%PDF-1.4\nabc", "application/pdf", purpose="banner"),
            400, "validation", "purpose")
    problem(upload(api, users["alice"], b"%PDF-1.4\nabc", "application/pdf", filename="a/b.pdf"),
            400, "validation", "file name")
    problem(api.call("POST", "/v1/media", raw=b"x", headers={"Content-Type": "application/pdf"}), 401)
    problem(api.call("GET", "/v1/media/not-a-uuid", token=users["alice"]), 404)
