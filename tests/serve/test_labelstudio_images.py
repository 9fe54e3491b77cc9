"""Task images of Label Studio's cloud storages, through a fake Label Studio on a local port.

The fake answers ``/tasks/ID/presign/`` (and ``/resolve/``) as Label Studio 1.23's
``io_storages/proxy_api.py`` does: the ``fileuri`` query is the base64url of the cloud URI;
a storage without pre-signed URLs streams the file, one with them redirects. A second server
stands for the bucket: the backend must never call it.
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from grounded_sam.serve.labelstudio_images import ImageSource, LabelStudioError, presign_path
from tests.serve.conftest import assert_error, png
from tests.serve.test_labelstudio import BRUSH_CONFIG, IMAGE, backend, ls_request

PHOTO = png(IMAGE)


def b64(uri: str) -> str:
    return base64.urlsafe_b64encode(uri.encode()).decode()


class Recorder(BaseHTTPRequestHandler):
    seen: list[str]  # set per server class

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", location: str | None = None) -> None:
        self.send_response(status)
        if location is not None:
            self.send_header("location", location)
        self.send_header("content-type", "image/png" if status == 200 else "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Bucket(Recorder):
    seen: list[str] = []

    def do_GET(self) -> None:
        Bucket.seen.append(self.path)
        self._send(200, PHOTO)


class FakeStorageLS(Recorder):
    """Label Studio with cloud storages: s3://bucket/photo.png proxied, others redirected."""

    seen: list[str] = []
    bucket = ""

    def do_GET(self) -> None:
        FakeStorageLS.seen.append(f"GET {self.path} {self.headers.get('authorization')}")
        if self.headers.get("authorization") != "Token abc":
            return self._send(401)
        parts = urlsplit(self.path)
        if parts.path == "/data/upload/1/photo.png":
            return self._send(200, PHOTO)
        if parts.path not in ("/tasks/7/presign/", "/tasks/7/resolve/"):
            return self._send(404)
        uri = base64.urlsafe_b64decode(parse_qs(parts.query)["fileuri"][0]).decode()
        if uri == "s3://bucket/photo.png":  # presign off: Label Studio proxies the file
            return self._send(200, PHOTO)
        if uri == "gs://bucket/moved.png":  # a redirect on the same host
            return self._send(302, location="/data/upload/1/photo.png")
        if uri == "s3://bucket/presigned.png":  # presign on: off to the bucket
            return self._send(303, location=f"{self.bucket}/presigned.png?X-Amz-Signature=x")
        if uri == "azure-blob://box/loop.png":
            return self._send(302, location=self.path)
        return self._send(404)


def _serve(handler: type) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def fake_ls():
    bucket, bucket_url = _serve(Bucket)
    FakeStorageLS.bucket = bucket_url
    ls, url = _serve(FakeStorageLS)
    yield url
    ls.shutdown()
    bucket.shutdown()


@pytest.fixture(autouse=True)
def _fresh_logs():
    FakeStorageLS.seen.clear()
    Bucket.seen.clear()


def test_presign_path_encodes_the_uri_as_label_studio_does() -> None:
    path = presign_path("s3://my-bucket/a b/ü.jpg", 12)
    assert path.startswith("/tasks/12/presign/?fileuri=")
    fileuri = path.partition("fileuri=")[2]
    assert base64.urlsafe_b64decode(fileuri).decode() == "s3://my-bucket/a b/ü.jpg"
    assert presign_path("gs://b/x.png", "12") == f"/tasks/12/presign/?fileuri={b64('gs://b/x.png')}"
    for bad in (None, 0, -3, "x", True, 1.5):
        with pytest.raises(LabelStudioError, match="task's id"):
            presign_path("s3://b/x.png", bad)


def test_a_cloud_uri_task_is_predicted_like_an_upload(engine, fake_ls) -> None:
    c = backend(engine, url=fake_ls, api_key="abc")
    upload = c.post("/predict", json=ls_request(BRUSH_CONFIG, "/data/upload/1/photo.png"))
    cloud = c.post("/predict", json=ls_request(BRUSH_CONFIG, "s3://bucket/photo.png"))
    assert upload.status_code == cloud.status_code == 200, cloud.text

    def masks(r):
        return [(x["value"]["rle"], x["score"]) for x in r.json()["results"][0]["result"]]

    assert masks(cloud) == masks(upload) and masks(cloud)
    want = f"GET /tasks/7/presign/?fileuri={b64('s3://bucket/photo.png')} Token abc"
    assert want in FakeStorageLS.seen


def test_resolved_references_and_same_host_redirects(fake_ls) -> None:
    source = ImageSource(url=fake_ls, api_key="abc")
    assert source.read("gs://bucket/moved.png", 7) == PHOTO  # 302 to /data/upload/...
    assert FakeStorageLS.seen[-1].startswith("GET /data/upload/1/photo.png")
    resolved = f"/tasks/7/resolve/?fileuri={b64('s3://bucket/photo.png')}"
    assert source.read(resolved) == PHOTO  # what Label Studio writes into resolved task data
    assert source.read(fake_ls + resolved) == PHOTO
    FakeStorageLS.seen.clear()
    for ref in ("/tasks/7/annotations/", "/projects/1/export?x=1", "/api/users/"):
        with pytest.raises(LabelStudioError, match="Cannot read"):
            source.read(ref, 7)
    assert FakeStorageLS.seen == []


def test_presigned_redirects_to_another_host_are_refused(engine, fake_ls) -> None:
    source = ImageSource(url=fake_ls, api_key="abc")
    with pytest.raises(LabelStudioError, match="Use pre-signed URLs") as info:
        source.read("s3://bucket/presigned.png", 7)
    assert info.value.status == 502 and "127.0.0.1" in str(info.value)
    with pytest.raises(LabelStudioError, match="more than 5"):
        source.read("azure-blob://box/loop.png", 7)
    assert Bucket.seen == []  # the bucket was never asked
    c = backend(engine, url=fake_ls, api_key="abc")
    r = c.post("/predict", json=ls_request(BRUSH_CONFIG, "s3://bucket/presigned.png"))
    assert_error(r, 502, "pre-signed", "proxies")
    assert Bucket.seen == []


def test_missing_settings_say_what_to_set(engine, fake_ls) -> None:
    unset = backend(engine)
    r = unset.post("/predict", json=ls_request(BRUSH_CONFIG, "s3://bucket/photo.png"))
    assert_error(r, 422, "s3://bucket/photo.png", "LABEL_STUDIO_URL")
    no_id = ls_request(BRUSH_CONFIG, "s3://bucket/photo.png")
    del no_id["tasks"][0]["id"]
    c = backend(engine, url=fake_ls, api_key="abc")
    assert_error(c.post("/predict", json=no_id), 422, "task's id")
    no_key = backend(engine, url=fake_ls)
    r = no_key.post("/predict", json=ls_request(BRUSH_CONFIG, "s3://bucket/photo.png"))
    assert_error(r, 422, "LABEL_STUDIO_API_KEY")
    assert FakeStorageLS.seen == [] and Bucket.seen == []


class RedirectingLS(FakeStorageLS):
    """A Label Studio whose upload redirects to its own API (the backend must not follow)."""

    def do_GET(self) -> None:
        FakeStorageLS.seen.append(f"GET {self.path} {self.headers.get('authorization')}")
        if self.path.startswith("/data/upload/1/away.png"):
            return self._send(302, location="/api/users/")
        if self.path.startswith("/data/upload/1/up.png"):
            return self._send(302, location="/data/../api/projects/")
        return self._send(200, PHOTO)  # anything else "answers": the test checks none was asked


@pytest.fixture(scope="module")
def redirecting_ls():
    ls, url = _serve(RedirectingLS)
    yield url
    ls.shutdown()


def test_only_file_paths_are_read_with_the_api_key(engine, fake_ls, redirecting_ls) -> None:
    source = ImageSource(url=fake_ls, api_key="abc")
    refused = [
        "/data/../api/projects/",  # httpx would send /api/projects/
        "data/upload/../../api/users/",
        "/data/%2e%2e/api/projects/",
        "/data/upload/%2E%2E/%2e%2e/api/users/",
        "/data/%252e%252e/api/users/",  # encoded twice
        "/storage-data/..%2f..%2fapi/users/",
        "/upload/../api/users/",
        f"{fake_ls}/api/users/",
        f"{fake_ls}/api/projects/1/export?exportType=JSON",
        f"{fake_ls}/data/../api/users/",
        f"{fake_ls}/data/%2e%2e/api/users/",
        f"{fake_ls}/tasks/7/annotations/",
    ]
    for ref in refused:
        with pytest.raises(LabelStudioError, match="only Label Studio's files") as info:
            source.read(ref, 7)
        assert info.value.status == 422, ref
    assert FakeStorageLS.seen == []
    c = backend(engine, url=fake_ls, api_key="abc")
    r = c.post("/predict", json=ls_request(BRUSH_CONFIG, f"{fake_ls}/api/users/"))
    assert_error(r, 422, "/api/users/", "only Label Studio's files")
    assert FakeStorageLS.seen == []
    assert source.read(f"{fake_ls}/data/upload/1/photo.png") == PHOTO  # files still are read

    redirecting = ImageSource(url=redirecting_ls, api_key="abc")
    for ref, sent in [
        ("/data/upload/1/away.png", "/api/users/"),
        ("/data/upload/1/up.png", "/api/projects/"),
    ]:
        FakeStorageLS.seen.clear()
        with pytest.raises(LabelStudioError, match="only Label Studio's files") as info:
            redirecting.read(ref)
        assert info.value.status == 422 and sent in str(info.value)
        assert [s.split()[1] for s in FakeStorageLS.seen] == [ref]  # the redirect not followed


def test_a_relative_reference_with_a_url_in_its_query_is_relative(fake_ls) -> None:
    source = ImageSource(url=fake_ls, api_key="abc")
    assert source.read("/data/upload/1/photo.png?from=https://example.com/x") == PHOTO
    assert FakeStorageLS.seen == [
        "GET /data/upload/1/photo.png?from=https://example.com/x Token abc"
    ]


class HtmlRefreshLS(Recorder):
    """A Label Studio (or a proxy before it) answering /api/token/refresh with a HTML page."""

    seen: list[str] = []

    def do_POST(self) -> None:
        HtmlRefreshLS.seen.append(f"POST {self.path}")
        body = b"<html>login</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        HtmlRefreshLS.seen.append(f"GET {self.path}")
        self._send(200, PHOTO)


def test_a_token_refresh_that_answers_no_json_is_a_502(engine) -> None:
    server, url = _serve(HtmlRefreshLS)
    try:
        source = ImageSource(url=url, api_key="a.personal.token")
        with pytest.raises(LabelStudioError, match="not JSON") as info:
            source.read("/data/upload/1/photo.png")
        assert info.value.status == 502 and "LABEL_STUDIO_URL" in str(info.value)
        c = backend(engine, url=url, api_key="a.personal.token")
        r = c.post("/predict", json=ls_request(BRUSH_CONFIG, "/data/upload/1/photo.png"))
        assert_error(r, 502, "/api/token/refresh", "not JSON")
        assert HtmlRefreshLS.seen == ["POST /api/token/refresh"] * 2  # no GET without a token
    finally:
        server.shutdown()
