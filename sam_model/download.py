"""Fetch an official checkpoint (any family) into a directory, resumably, checked.

Checkpoints are 40 MB-2.5 GB, so an interrupted download keeps its `.part` file and the
next run continues it with an HTTP Range request. A file is checked by its published md5
(SAM v1) or sha256 (sam2.1_hiera_tiny); a file with no published digest gets the sha256 of
its first download recorded beside it (`<file>.sha256`, also logged), and later copies and
`--verify` are checked against that record. Only stdlib, requests and tqdm: this
runs before anything else is set up (`make checkpoint`, `make run`).

    python -m sam_model.download sam2.1_hiera_tiny [--dir checkpoints] [--verify]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import requests
from tqdm import tqdm

from sam_model.registry import OFFICIAL_CHECKPOINTS, OfficialCheckpoint, file_digest, recorded_sha256

CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0
log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint could not be made available; the message says what to do instead."""


class CheckpointUnavailable(CheckpointError):
    """The server could not be reached or the transfer broke off (no network, proxy, 404)."""


class ChecksumMismatch(CheckpointError):
    """The downloaded bytes are not the official file; nothing is left behind."""


Digest = tuple[str, str]  # (algorithm, hex digest)


def ensure_checkpoint(
    model_type: str,
    directory: str | os.PathLike[str] = "checkpoints",
    url: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    *,
    size: int | None = None,
    sha256: str | None = None,
    verify_existing: bool = False,
) -> Path:
    """Return the path of `model_type`'s checkpoint in `directory`, downloading it if needed.

    `url`, `md5`/`sha256` and `size` default to the official registry entry (a mirror passes
    only `url`; tests pass all of them). An existing file of the expected size is trusted
    without hashing unless `verify_existing` (hashing vit_h takes a while); a fresh download
    is always checked, or its sha256 recorded when no digest is known.
    """
    try:
        entry = OFFICIAL_CHECKPOINTS[model_type]
    except KeyError:
        known = ", ".join(OFFICIAL_CHECKPOINTS)
        raise CheckpointError(f"unknown model type {model_type!r}; expected one of: {known}") from None
    url = url or entry.url
    expected = _expected_digest(entry, md5, sha256)
    if size is None and expected == _expected_digest(entry, None, None):
        size = entry.size_bytes  # the official file, wherever it is fetched from
    dest = Path(directory) / entry.filename

    if dest.exists() and (size is None or dest.stat().st_size == size):
        known = expected or _recorded(dest)
        # Trusted by its size (or by having been checked when it arrived) unless asked to verify;
        # a caller's digest for a file of unknown size is always checked.
        if known is None or (not verify_existing and (size is not None or expected is None)):
            return dest
        if file_digest(dest, known[0]) == known[1]:
            return dest
        raise ChecksumMismatch(
            f"{dest} exists but its {known[0]} is not {known[1]}; delete it and run again to re-download"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    _download(url, dest, expected, size, progress)
    return dest


def _expected_digest(entry: OfficialCheckpoint, md5: str | None, sha256: str | None) -> Digest | None:
    if md5 or sha256:
        return ("md5", md5.lower()) if md5 else ("sha256", str(sha256).lower())
    if entry.md5:
        return ("md5", entry.md5)
    return ("sha256", entry.sha256) if entry.sha256 else None


def _recorded(dest: Path) -> Digest | None:
    recorded = recorded_sha256(dest)
    return ("sha256", recorded) if recorded else None


def _download(url: str, dest: Path, expected: Digest | None, size: int | None, progress: bool) -> None:
    """Stream `url` into `dest.part` (continuing it when possible), check it, then rename."""
    part = dest.with_name(dest.name + ".part")
    check = f" ({expected[0]} {expected[1]})" if expected else ""
    hint = f"Download it elsewhere and place it at {dest}{check}, or run with SAM_ENGINE=grabcut"
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.RequestException as exc:
        raise CheckpointUnavailable(f"could not reach {url}: {_reason(exc)}. {hint}") from None

    with response:
        if response.status_code == 416 and offset:
            # The .part already holds everything the server has: check it as it is.
            pass
        elif response.status_code == 206 and offset:
            _stream(response, part, url, hint, offset, size, progress, append=True)
        elif response.status_code == 200:
            # No Range sent, or the server ignored it: start over from byte 0.
            _stream(response, part, url, hint, 0, size, progress, append=False)
        else:
            raise CheckpointUnavailable(f"could not download {url}: HTTP {response.status_code}. {hint}")

    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise CheckpointUnavailable(f"{url} gave {got_size} bytes, expected {size}; removed the partial file. {hint}")
    if expected is None:
        digest = file_digest(part, "sha256")
        Path(f"{dest}.sha256").write_text(digest + "\n", encoding="ascii")
        log.warning(
            "%s has no published digest: recorded its sha256 %s in %s.sha256 (later copies are checked against it)",
            dest.name,
            digest,
            dest.name,
        )
    else:
        algorithm, want = expected
        got = file_digest(part, algorithm)
        if got != want:
            part.unlink()
            raise ChecksumMismatch(
                f"{algorithm} of {url} is {got}, expected {want}; removed the download. "
                f"Run again; if it repeats, the source or a proxy serves a different file. {hint}"
            )
    os.replace(part, dest)


def _stream(
    response: requests.Response,
    part: Path,
    url: str,
    hint: str,
    offset: int,
    size: int | None,
    progress: bool,
    *,
    append: bool,
) -> None:
    """Write the body to `part`; a broken transfer keeps what arrived so the next run resumes."""
    length = response.headers.get("Content-Length")
    total = size if size is not None else (offset + int(length) if length and length.isdigit() else None)
    with (
        open(part, "ab" if append else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
        except requests.RequestException as exc:
            out.flush()
            raise CheckpointUnavailable(
                f"download of {url} broke off after {out.tell()} bytes ({_reason(exc)}); "
                f"run again to resume from {part}. {hint}"
            ) from None


def _reason(exc: BaseException) -> str:
    """The useful tail of a requests error ('[Errno 111] Connection refused'), not its repr chain."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if match:
        return match.group(0).strip()
    return text[:200] or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """CLI: exit 0 with the path on stdout, 2 when the file cannot be fetched, 1 on other errors."""
    parser = argparse.ArgumentParser(
        description="Download an official checkpoint (SAM v1, SAM 2.x, MobileSAM, SAM-HQ), checked."
    )
    parser.add_argument("model_type", choices=sorted(OFFICIAL_CHECKPOINTS))
    parser.add_argument("--dir", default="checkpoints", help="target directory (default: checkpoints)")
    parser.add_argument("--url", help="a mirror of the official file (the official digest is still checked)")
    parser.add_argument("--verify", action="store_true", help="also check the digest of a file that is already there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        path = ensure_checkpoint(
            args.model_type, args.dir, args.url, progress=not args.quiet, verify_existing=args.verify
        )
    except CheckpointUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
