"""Upload bodies stream into the blob store in parts of MEDIA_PART_BYTES (4 MiB) instead of
sitting whole in memory: a raw POST /v1/media and a tus PATCH larger than a part are stored as
several parts whose bytes and SHA-256 are the upload's; a type's size cap stops the body as
soon as it is passed and leaves nothing stored; and a media instance's peak memory grows by
far less than a 48 MiB upload while it takes one.

They run against a media instance of their own with a database of its own: tens of MiB of
GridFS chunks in the platform's database would slow every later media test on FerretDB."""

import base64
import hashlib
import os
import struct
import zlib

import pytest
import requests

import pymongo

from conftest import DB_SUFFIX, LOGS, MONGO_URI, PORTS, SANITIZER_MARKS, Service, token_for
from media_util import vm_hwm_kib, vm_rss_kib
from test_media import problem

PART = 4 << 20
MEM_MEDIA_PORT = PORTS["gateway"] + 11
MEDIA = f"http://127.0.0.1:{MEM_MEDIA_PORT}"
STREAM_DB = f"test_media_stream_{DB_SUFFIX}"


def media_db():
    return pymongo.MongoClient(MONGO_URI)[STREAM_DB]


def upload(api, token, data, content_type):
    """POST /v1/media straight to this module's media instance (storing many MiB in GridFS on
    the shared FerretDB also takes longer than the gateway's 10 s upstream timeout; the
    gateway's upload path is covered by test_media.py)."""
    return requests.post(f"{MEDIA}/v1/media", data=data, timeout=300,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})


def content(token, media_id, **headers):
    """The bytes straight from this module's media instance."""
    return requests.get(f"{MEDIA}/v1/media/{media_id}/content", timeout=300,
                        headers={"Authorization": f"Bearer {token}", **headers})


@pytest.fixture
def alice(api, tenant):
    return token_for(api, tenant, "alice")


def pdf(n):
    return b"%PDF-1.4\n" + os.urandom(n - 9)


def parts_of(media_id):
    doc = media_db().media.find_one({"_id": media_id})
    return [p["len"] for p in doc["parts"]], doc


def blob_count(*lengths):
    """Blobs of these lengths (parts a refused body would leave behind; the worker's
    thumbnails, written meanwhile, have other sizes)."""
    return media_db()["media.files"].count_documents({"length": {"$in": list(lengths)}})


def test_a_raw_upload_larger_than_a_part_is_stored_in_parts(api, alice):
    data = pdf(3 * PART + 123_457)
    r = upload(api, alice, data, "application/pdf")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["size"] == len(data) and body["content_type"] == "application/pdf"
    lens, doc = parts_of(body["id"])
    assert lens == [PART, PART, PART, 123_457]
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    got = content(alice, body["id"])
    assert got.status_code == 200 and got.headers["ETag"] == f'"{doc["sha256"]}"'
    assert hashlib.sha256(got.content).hexdigest() == doc["sha256"]
    # A range across the boundary of two parts.
    r = content(alice, body["id"], Range=f"bytes={PART - 5}-{PART + 4}")
    assert r.status_code == 206 and r.content == data[PART - 5:PART + 5]


def noise_png(width, height):
    """An RGB PNG of random pixels stored without compression: about 3 x width x height bytes,
    so its size is chosen exactly (the vips CLI compresses)."""
    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b""))


def test_an_image_over_a_part_is_probed_from_its_parts(api, alice):
    data = noise_png(1200, 1200)
    assert PART < len(data) <= 5 << 20
    r = upload(api, alice, data, "image/png")
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"]) == (1200, 1200)
    lens, doc = parts_of(r.json()["id"])
    assert len(lens) == 2 and sum(lens) == len(data)
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_type_cap_stops_the_body_and_keeps_nothing(api, alice):
    before = blob_count(PART)
    # PNG by its bytes, over the 5 MiB image cap: refused once the cap is passed.
    data = noise_png(1500, 1500)
    assert len(data) > 6 << 20
    p = problem(upload(api, alice, data, "image/png"), 413, "too-large")
    assert "image/png uploads may be at most 5242880 bytes" in p["detail"], p
    # A type the tenant does not accept, larger than a part: 415, nothing kept.
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + os.urandom(PART + 1000)
    problem(upload(api, alice, elf, "application/pdf"), 415, "unsupported-media-type")
    assert blob_count(PART) == before


def test_a_tus_patch_larger_than_a_part_is_stored_in_parts(api, alice):
    data = pdf(2 * PART + 777)
    auth = {"Authorization": f"Bearer {alice}", "Tus-Resumable": "1.0.0"}
    r = requests.post(MEDIA + "/v1/uploads", headers={**auth, "Upload-Length": str(len(data))}, timeout=30)
    assert r.status_code == 201, r.text
    url = MEDIA + r.headers["Location"]
    patch = {**auth, "Content-Type": "application/offset+octet-stream"}
    # A wrong checksum over a multi-part body: 460, nothing stored, the offset stays 0.
    before = blob_count(PART, 10)
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = requests.patch(url, data=data[:PART + 10], timeout=60,
                       headers={**patch, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {bad}"})
    assert r.status_code == 460, r.text
    assert blob_count(PART, 10) == before
    assert requests.head(url, headers=auth, timeout=10).headers["Upload-Offset"] == "0"
    # Two PATCHes, the first with a correct checksum and over a part.
    good = base64.b64encode(hashlib.sha1(data[:PART + 10]).digest()).decode()
    r = requests.patch(url, data=data[:PART + 10], timeout=60,
                       headers={**patch, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {good}"})
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(PART + 10), r.text
    r = requests.patch(url, data=data[PART + 10:], timeout=60, headers={**patch, "Upload-Offset": str(PART + 10)})
    assert r.status_code == 204, r.text
    mid = r.headers["Content-Location"].rsplit("/", 1)[1]
    lens, _ = parts_of(mid)
    assert lens == [PART, 10, PART, 767], lens
    got = content(alice, mid)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def mem_media(platform):
    """This module's media instance: its own port and database, so its peak memory is these
    tests' alone; ASan's quarantine (which keeps freed memory resident to catch use-after-free)
    is off so that the peak shows what the code holds, not what the sanitizer keeps."""
    svc = Service("media", {
        "HTTP_PORT": str(MEM_MEDIA_PORT), "MONGO_DB": STREAM_DB,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:quarantine_size_mb=0",
        "MEDIA_WORKER_GROUP": f"e2e-media-mem-worker-{PORTS['gateway']}"})  # kept across runs
    svc.port = MEM_MEDIA_PORT
    svc.log_path = LOGS / "media_stream.log"
    svc.start()
    try:
        yield svc
        code = svc.stop()
        text = svc.log_path.read_text(errors="replace")
        assert not [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKS)]
        assert code == 0
    finally:
        svc.stop()
        pymongo.MongoClient(MONGO_URI).drop_database(STREAM_DB)


def test_memory_stays_bounded_while_a_large_upload_streams(alice, mem_media):
    base = MEDIA
    auth = {"Authorization": f"Bearer {alice}"}
    small = pdf(100_000)
    assert requests.post(base + "/v1/media", data=small, timeout=30,
                         headers={**auth, "Content-Type": "application/pdf"}).status_code == 201
    pid = mem_media.proc.pid
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    rss0 = vm_rss_kib(pid)
    size = 48 << 20
    data = pdf(size)
    r = requests.post(base + "/v1/media", data=data, timeout=300,
                      headers={**auth, "Content-Type": "application/pdf"})
    assert r.status_code == 201, r.text
    grew = vm_hwm_kib(pid) - rss0
    # Buffered, the body alone would be 48 MiB; streamed, a part (4 MiB) and the store
    # client's buffers.
    assert grew < 24 * 1024, f"peak memory grew by {grew} KiB for a {size >> 20} MiB upload"
    assert media_db().media.find_one({"_id": r.json()["id"]})["sha256"] == hashlib.sha256(data).hexdigest()
