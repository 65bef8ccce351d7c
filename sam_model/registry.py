"""The official checkpoint files of every family: the one table the downloader, the loader and
the backend read.

Meta publishes md5s for SAM v1 only; of the others only sam2.1_hiera_tiny's sha256 is known
(checked against the real file). For a file with no published digest the downloader records
the sha256 of the first download next to it (`<file>.sha256`) and checks later copies
against that record.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_URLS = {
    "sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/",
    "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/",
}
MOBILE_SAM_URL = "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/"
SAM_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One published file: where it is, and whatever is known to check it by."""

    model_type: str
    filename: str
    base_url: str
    licence: str
    size_bytes: int | None = None
    md5: str | None = None
    sha256: str | None = None

    @property
    def url(self) -> str:
        return self.base_url + self.filename


def _sam2(release: str, size: str, **known: object) -> OfficialCheckpoint:
    name = f"{release}_hiera_{size}"
    return OfficialCheckpoint(name, f"{name}.pt", SAM2_URLS[release], "Apache-2.0", **known)  # type: ignore[arg-type]


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    c.model_type: c
    for c in (
        OfficialCheckpoint(
            "vit_b", "sam_vit_b_01ec64.pth", SAM1_URL, "Apache-2.0", 375_042_383, "01ec64d29a2fca3f0661936605ae66f8"
        ),
        OfficialCheckpoint(
            "vit_l", "sam_vit_l_0b3195.pth", SAM1_URL, "Apache-2.0", 1_249_524_607, "0b3195507c641ddb6910d2bb5adee89c"
        ),
        OfficialCheckpoint(
            "vit_h", "sam_vit_h_4b8939.pth", SAM1_URL, "Apache-2.0", 2_564_550_879, "4b8939a88964f0f4ff5f5b2642c598a6"
        ),
        _sam2(
            "sam2.1",
            "tiny",
            size_bytes=156_008_466,
            sha256="7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        ),
        *(_sam2("sam2.1", size) for size in ("small", "base_plus", "large")),
        *(_sam2("sam2", size) for size in ("tiny", "small", "base_plus", "large")),
        OfficialCheckpoint("mobile_sam", "mobile_sam.pt", MOBILE_SAM_URL, "Apache-2.0"),
        *(
            OfficialCheckpoint(f"sam_hq_{v}", f"sam_hq_{v}.pth", SAM_HQ_URL, "Apache-2.0")
            for v in ("vit_b", "vit_l", "vit_h", "vit_tiny")
        ),
    )
}


def file_digest(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 22) -> str:
    """md5 or sha256 of a file, read in chunks: how official files are told from corrupt or partial ones."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: str | os.PathLike) -> str:
    return file_digest(path, "md5")


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 the downloader recorded for this file, if any."""
    record = f"{os.fspath(path)}.sha256"
    if not os.path.isfile(record):
        return None
    with open(record, encoding="ascii", errors="replace") as f:
        return f.read(64).strip().lower() or None


def official_by_filename(filename: str) -> OfficialCheckpoint | None:
    """The official entry whose file name this is, if any (digests are checked only for those)."""
    return next((c for c in OFFICIAL_CHECKPOINTS.values() if c.filename == filename), None)
