"""The official SAM v1 checkpoints: the one table every other module reads."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class OfficialCheckpoint:
    model_type: str
    filename: str
    size_bytes: int
    md5: str

    @property
    def url(self) -> str:
        return BASE_URL + self.filename


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    c.model_type: c
    for c in (
        OfficialCheckpoint("vit_b", "sam_vit_b_01ec64.pth", 375_042_383, "01ec64d29a2fca3f0661936605ae66f8"),
        OfficialCheckpoint("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607, "0b3195507c641ddb6910d2bb5adee89c"),
        OfficialCheckpoint("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879, "4b8939a88964f0f4ff5f5b2642c598a6"),
    )
}


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """md5 of a file, read in chunks: how official files are told from corrupt or partial ones."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def official_by_filename(filename: str) -> OfficialCheckpoint | None:
    """The official entry whose file name this is, if any (md5 is checked only for those)."""
    return next((c for c in OFFICIAL_CHECKPOINTS.values() if c.filename == filename), None)
