"""The checkpoint downloader against a real local HTTP server (no mocks of requests)."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sam_model import download
from sam_model.download import CheckpointError, CheckpointUnavailable, ChecksumMismatch, ensure_checkpoint
from sam_model.registry import OFFICIAL_CHECKPOINTS

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, several chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
FILENAME = OFFICIAL_CHECKPOINTS["vit_b"].filename


class FakeServer:
    """Serves PAYLOAD at /file; records Range headers; can ignore Range or cut the body short."""

    def __init__(self) -> None:
        self.honour_range = True
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        self.bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng and server.honour_range else 0
                body = PAYLOAD[start:]
                if start >= len(PAYLOAD) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body = body[: server.cut_after]
                server.bytes_sent += len(body)  # before writing: the client may finish reading first
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def fetch(tmp_path: Path, url: str, md5: str = PAYLOAD_MD5, size: int | None = None) -> Path:
    return ensure_checkpoint("vit_b", tmp_path, url=url, md5=md5, progress=False, size=size)


def test_full_download_lands_under_the_official_name(tmp_path: Path, server: FakeServer) -> None:
    path = fetch(tmp_path, server.url)
    assert path == tmp_path / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None]
    assert not (tmp_path / (FILENAME + ".part")).exists()


def test_resumes_from_part_file_with_range(tmp_path: Path, server: FakeServer) -> None:
    done = 300_000
    (tmp_path / (FILENAME + ".part")).write_bytes(PAYLOAD[:done])
    path = fetch(tmp_path, server.url)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={done}-"]
    assert server.bytes_sent == len(PAYLOAD) - done


def test_restarts_when_server_ignores_range(tmp_path: Path, server: FakeServer) -> None:
    server.honour_range = False
    (tmp_path / (FILENAME + ".part")).write_bytes(b"\xff" * 1000)  # would corrupt an append
    path = fetch(tmp_path, server.url)
    assert path.read_bytes() == PAYLOAD
    assert server.bytes_sent == len(PAYLOAD)


def test_complete_part_file_is_checked_and_kept(tmp_path: Path, server: FakeServer) -> None:
    (tmp_path / (FILENAME + ".part")).write_bytes(PAYLOAD)
    path = fetch(tmp_path, server.url, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    assert server.bytes_sent == 0


def test_md5_mismatch_raises_and_leaves_nothing(tmp_path: Path, server: FakeServer) -> None:
    with pytest.raises(ChecksumMismatch, match="md5 .* expected 0{32}"):
        fetch(tmp_path, server.url, md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_broken_transfer_keeps_part_for_resume(
    tmp_path: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "CHUNK_BYTES", 1 << 16)
    server.cut_after = 200_000
    with pytest.raises(CheckpointUnavailable, match="run again to resume"):
        fetch(tmp_path, server.url)
    kept = (tmp_path / (FILENAME + ".part")).read_bytes()
    assert 0 < len(kept) <= 200_000 and PAYLOAD.startswith(kept)
    server.cut_after = None
    assert fetch(tmp_path, server.url).read_bytes() == PAYLOAD
    assert server.ranges[-1] == f"bytes={len(kept)}-"


def test_existing_file_of_right_size_is_not_downloaded(tmp_path: Path, server: FakeServer) -> None:
    (tmp_path / FILENAME).write_bytes(PAYLOAD)
    assert fetch(tmp_path, server.url, size=len(PAYLOAD)) == tmp_path / FILENAME
    assert server.ranges == []


def test_official_file_from_a_mirror_is_trusted_by_its_official_size(tmp_path: Path, server: FakeServer) -> None:
    with open(tmp_path / FILENAME, "wb") as f:
        f.truncate(OFFICIAL_CHECKPOINTS["vit_b"].size_bytes)  # sparse: instant, no disk used
    assert download.main(["vit_b", "--dir", str(tmp_path), "--url", server.url, "--quiet"]) == 0
    assert server.ranges == []


def test_existing_file_with_wrong_md5_is_refused_when_verifying(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ChecksumMismatch, match="delete it"):
        ensure_checkpoint(
            "vit_b",
            tmp_path,
            url="http://unused.invalid/",
            md5=PAYLOAD_MD5,
            size=16,
            progress=False,
            verify_existing=True,
        )


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def test_offline_message_says_where_to_place_the_file(tmp_path: Path) -> None:
    url = refused_url()
    with pytest.raises(CheckpointUnavailable) as info:
        fetch(tmp_path, url)
    message = str(info.value)
    assert f"could not reach {url}: [Errno 111] Connection refused" in message
    assert f"place it at {tmp_path / FILENAME} (md5 {PAYLOAD_MD5})" in message
    assert "SAM_ENGINE=grabcut" in message


def test_cli_exits_2_when_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = refused_url()
    code = download.main(["vit_b", "--dir", str(tmp_path), "--url", url, "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "could not reach" in err and OFFICIAL_CHECKPOINTS["vit_b"].md5 in err


def test_unknown_model_type_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="vit_b, vit_l, vit_h"):
        ensure_checkpoint("vit_x", tmp_path)


def test_a_file_without_published_digest_gets_its_sha256_recorded_and_checked(
    tmp_path: Path, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    entry = OFFICIAL_CHECKPOINTS["sam2.1_hiera_large"]
    assert entry.md5 is None and entry.sha256 is None  # Meta publishes none for it
    with caplog.at_level("WARNING"):
        path = ensure_checkpoint("sam2.1_hiera_large", tmp_path, url=server.url, progress=False)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert path.name == entry.filename and path.read_bytes() == PAYLOAD
    assert Path(f"{path}.sha256").read_text().strip() == sha and sha in caplog.text
    assert ensure_checkpoint("sam2.1_hiera_large", tmp_path, url=server.url, verify_existing=True) == path
    with open(path, "r+b") as f:  # the same size, one byte changed: only the record can tell
        f.write(b"\xff")
    with pytest.raises(ChecksumMismatch, match=f"sha256 is not {sha}"):
        ensure_checkpoint("sam2.1_hiera_large", tmp_path, url=server.url, verify_existing=True)


def test_a_pinned_sha256_is_checked(tmp_path: Path, server: FakeServer) -> None:
    assert OFFICIAL_CHECKPOINTS["sam2.1_hiera_tiny"].sha256  # known and pinned
    with pytest.raises(ChecksumMismatch, match="sha256 of .* expected 7402e0d8"):
        ensure_checkpoint("sam2.1_hiera_tiny", tmp_path, url=server.url, progress=False, size=len(PAYLOAD))
    assert not list(tmp_path.iterdir())  # nothing left behind
