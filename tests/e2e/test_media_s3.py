"""The S3 backend against a real S3-compatible server (versitygw, built from its Go module by
deploy/deps.sh, over a posix directory, started here as its own process): a second media
instance with MEDIA_STORE=s3 stores, serves ranges from, processes and deletes objects in a
bucket, every request signed with SigV4 by libcurl and checked by the server."""

import os
import subprocess
import time

import pytest
import requests

from conftest import DB_SUFFIX, LOGS, PORTS, ROOT, SANITIZER_MARKS, Service, token_for
from media_util import make_image

S3_PORT = PORTS["gateway"] + 5
MEDIA_S3_PORT = PORTS["gateway"] + 6
ENDPOINT = f"http://127.0.0.1:{S3_PORT}"
BUCKET = "chat-media-test"
CREDS = {"aws_access_key_id": "AKIDTESTMEDIA", "aws_secret_access_key": "test-secret-key-media"}


VERSITYGW = ROOT / ".local" / "bin" / "versitygw"


@pytest.fixture(scope="module")
def s3_media(platform, tmp_path_factory):
    root = tmp_path_factory.mktemp("s3")
    (root / "data" / BUCKET).mkdir(parents=True)  # a posix bucket is a directory
    (root / "meta").mkdir()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / "versitygw.log", "ab")
    gw = subprocess.Popen([str(VERSITYGW), "--port", f"127.0.0.1:{S3_PORT}",
                           "--access", CREDS["aws_access_key_id"], "--secret", CREDS["aws_secret_access_key"],
                           "posix", "--sidecar", str(root / "meta"), str(root / "data")],
                          stdout=log, stderr=log)
    svc = None
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                requests.get(ENDPOINT, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        svc = Service("media", {
            "HTTP_PORT": str(MEDIA_S3_PORT),
            "MONGO_DB": f"test_media_s3_{DB_SUFFIX}", "MEDIA_STORE": "s3", "S3_ENDPOINT": ENDPOINT,
            "S3_BUCKET": BUCKET, "S3_REGION": "us-east-1", "S3_ACCESS_KEY": CREDS["aws_access_key_id"],
            "S3_SECRET_KEY": CREDS["aws_secret_access_key"],
            "MEDIA_WORKER_GROUP": f"e2e-media-s3-worker-{PORTS['gateway']}"})  # kept across runs, as in conftest
        svc.port = MEDIA_S3_PORT
        svc.log_path = LOGS / "media_s3.log"
        svc.start()
        yield {"dir": root / "data" / BUCKET, "base": f"http://127.0.0.1:{MEDIA_S3_PORT}"}
        code = svc.stop()
        text = svc.log_path.read_text(errors="replace")
        bad = [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKS)]
        assert not bad, bad[:10]
        assert code == 0, f"media (s3) exited with {code}"
    finally:
        if svc:
            svc.stop()
        gw.terminate()
        gw.wait(timeout=10)
        import pymongo
        from conftest import MONGO_URI
        pymongo.MongoClient(MONGO_URI).drop_database(f"test_media_s3_{DB_SUFFIX}")


def keys(bucket_dir):
    return {p.name for p in bucket_dir.iterdir() if p.is_file()}


def test_s3_store_upload_ranges_processing_delete(api, tenant, s3_media, tmp_path):
    base, s3 = s3_media["base"], s3_media["dir"]
    token = token_for(api, tenant, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    before = keys(s3)
    data = b"%PDF-1.4\n" + os.urandom(700_000)
    r = requests.post(f"{base}/v1/media", data=data, headers=dict(auth, **{"Content-Type": "application/pdf"}), timeout=30)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    new = keys(s3) - before
    assert len(new) == 1 and all(len(k) == 32 for k in new), new  # random hex keys
    stored = (s3 / new.pop()).read_bytes()
    assert stored == data
    got = requests.get(f"{base}/v1/media/{mid}/content", headers=auth, timeout=30)
    assert got.status_code == 200 and got.content == data
    for first, last in ((0, 0), (123_456, 654_321), (len(data) - 7, len(data) - 1)):
        r = requests.get(f"{base}/v1/media/{mid}/content", headers=dict(auth, Range=f"bytes={first}-{last}"), timeout=30)
        assert r.status_code == 206 and r.content == data[first:last + 1]

    jpeg = make_image(tmp_path / "s3", 800, 400)
    r = requests.post(f"{base}/v1/media", data=jpeg, headers=dict(auth, **{"Content-Type": "image/jpeg"}), timeout=30)
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        m = requests.get(f"{base}/v1/media/{iid}", headers=auth, timeout=10).json()
        if m["status"] != "pending":
            break
        time.sleep(0.2)
    assert m["status"] == "processed", m
    thumb = requests.get(f"{base}/v1/media/{iid}/content?variant=thumb_128", headers=auth, timeout=10)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert len(keys(s3) - before) == 2 + 4  # two originals and four variants

    for i in (mid, iid):
        assert requests.delete(f"{base}/v1/media/{i}", headers=auth, timeout=10).status_code == 204
    assert keys(s3) - before == set()


def test_the_server_checks_signatures(s3_media):
    """The store is not open: an unsigned request or a wrong secret is refused by the server,
    so the successful calls above were really signed with SigV4."""
    assert requests.get(f"{ENDPOINT}/{BUCKET}", timeout=10).status_code == 403
    def curl(secret):
        return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4",
                               "aws:amz:us-east-1:s3", "--user", f"{CREDS['aws_access_key_id']}:{secret}",
                               "-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                               f"{ENDPOINT}/{BUCKET}"], capture_output=True, text=True).stdout
    assert curl("wrong-secret") == "403"
    assert curl(CREDS["aws_secret_access_key"]) == "200"
