"""A stand-in ML backend that records what Label Studio sends it, for capturing protocol samples.

Why: only a real LS shows the bodies its labeling UI makes it send (smart tools, TextArea, modifier
keys); tests/fixtures/ls-samples/ keeps those bodies so the protocol code is checked against them.
It answers /health, /setup, /versions and /predict with valid empty answers (one prediction with
no regions, so LS reports no error) and writes every request body, byte for byte, plus its headers
to the output folder as NNN-<path>.json and NNN-<path>.headers.json.

Usage: python tests/e2e/record_backend.py OUT_DIR [--port 0] [--lifetime-s 3600]
It listens on 127.0.0.1 only, prints its URL as the first stdout line and stops after --lifetime-s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_VERSION = "recorder"

# What each path answers: valid for LS 1.23.2 (ml/models.py checks /predict's "results" is a non-empty list).
ANSWERS: dict[str, dict] = {
    "health": {"status": "UP", "model_class": "Recorder"},
    "setup": {"model_version": MODEL_VERSION},
    "versions": {"versions": [MODEL_VERSION]},
    "predict": {"results": [{"result": [], "score": 0.0, "model_version": MODEL_VERSION}]},
    "webhook": {},
}


def make_handler(out: Path) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to one output folder and one request counter."""
    counter = itertools.count(1)
    lock = threading.Lock()

    class Recorder(BaseHTTPRequestHandler):
        def _record_and_answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            name = self.path.split("?", 1)[0].strip("/").replace("/", "_") or "root"
            with lock:
                stem = f"{next(counter):03d}-{name}"
            (out / f"{stem}.json").write_bytes(body)
            headers = {"method": self.command, "path": self.path, **dict(self.headers.items())}
            (out / f"{stem}.headers.json").write_text(json.dumps(headers, indent=2))
            answer = ANSWERS.get(name)
            payload = json.dumps(answer if answer is not None else {"error": "unknown path"}).encode()
            self.send_response(200 if answer is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _record_and_answer
        do_POST = _record_and_answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            """Quiet: the recorded files are the log."""

    return Recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the recorded bodies")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--lifetime-s", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.out))
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    stopper = threading.Timer(args.lifetime_s, server.shutdown)
    stopper.daemon = True
    stopper.start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
