"""Fixtures: fresh local servers per test (one plays Label Studio, one an external host), a TLS cert, a PNG."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.support.fake_http import FakeServer
from tests.support.images import png as png_bytes
from tests.support.raw_http import CaptureServer


@pytest.fixture
def ls():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def ext():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def cap():
    """A raw listener that records every request it gets (to prove a token never arrives)."""
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for the name images.test: (cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=images.test",
            "-addext",
            "subjectAltName=DNS:images.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_ext(tls_cert):
    server = FakeServer(tls=tls_cert)
    yield server
    server.close()


@pytest.fixture
def png() -> bytes:
    """A 4x3 RGB PNG whose columns are red, green, blue, white."""
    columns = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    return png_bytes(np.array([columns] * 3, np.uint8))
