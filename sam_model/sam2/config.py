"""The official SAM 2.0 / 2.1 image-path configurations (Meta's `configs/sam2*/sam2*_hiera_*.yaml`).

2.0 and 2.1 share the image path of each size; they differ only in video-only modules
(2.1 adds `no_obj_embed_spatial` and `obj_ptr_tpos_proj`), which the loader uses to tell
the files apart. Model types are the official file stems, e.g. "sam2.1_hiera_tiny".
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 1024
PROMPT_EMBED_DIM = 256
# Feature map sides of the three levels the decoder uses (strides 4, 8, 16).
LEVEL_SIDES = (IMAGE_SIZE // 4, IMAGE_SIZE // 8, IMAGE_SIZE // 16)
URLS = {
    "2.0": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/",
    "2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/",
}


@dataclass(frozen=True)
class HieraConfig:
    """One Hiera trunk size; the FPN neck reads the trunk's stage widths."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width of each stage's output, highest resolution first (width doubles per stage)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))


@dataclass(frozen=True)
class Sam2Config:
    """A named official checkpoint: its trunk and which SAM 2 release it belongs to."""

    model_type: str
    version: str
    size: str
    trunk: HieraConfig

    @property
    def filename(self) -> str:
        return f"{self.model_type}.pt"

    @property
    def url(self) -> str:
        return URLS[self.version] + self.filename


TRUNKS: dict[str, HieraConfig] = {
    "tiny": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20)),
    "large": HieraConfig(
        144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)
    ),
}

SAM2_CONFIGS: dict[str, Sam2Config] = {
    f"{prefix}_hiera_{size}": Sam2Config(f"{prefix}_hiera_{size}", version, size, trunk)
    for version, prefix in (("2.1", "sam2.1"), ("2.0", "sam2"))
    for size, trunk in TRUNKS.items()
}
SAM2_MODEL_TYPES: tuple[str, ...] = tuple(SAM2_CONFIGS)
