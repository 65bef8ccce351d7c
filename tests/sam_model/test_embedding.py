"""ImageEmbedding bytes: exact round trips for every dtype, loud failures for bad input."""

from __future__ import annotations

import pickle

import pytest
import torch

from sam_model import ImageEmbedding

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int64, torch.bool]


def make(features: torch.Tensor, model_id: str = "vit_b:sam_vit_b_01ec64") -> ImageEmbedding:
    return ImageEmbedding(features, (3000, 4000), (768, 1024), model_id)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 256, 64, 64), (480, 640, 3), (7,), (), (2, 0, 3)], ids=str)
def test_round_trip_keeps_dtype_shape_and_values(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    features = (torch.rand(shape) * 200).to(dtype)
    back = ImageEmbedding.from_bytes(make(features).to_bytes(dtype=None))
    assert back.features.dtype == dtype and back.features.shape == features.shape
    assert torch.equal(back.features, features)
    assert (back.original_size, back.input_size, back.model_id) == ((3000, 4000), (768, 1024), "vit_b:sam_vit_b_01ec64")


def test_default_is_fp16_and_half_the_size() -> None:
    features = torch.randn(1, 256, 64, 64)
    data = make(features).to_bytes()
    assert 2 * 2**20 <= len(data) < 2 * 2**20 + 256
    back = ImageEmbedding.from_bytes(data)
    assert back.features.dtype == torch.float16
    torch.testing.assert_close(back.features.float(), features, atol=2e-3, rtol=1e-3)


def test_uint8_image_as_features() -> None:
    """The grabcut engine keeps the image itself as its features."""
    image = torch.randint(0, 256, (300, 500, 3), dtype=torch.uint8)
    emb = ImageEmbedding(image, (300, 500), (300, 500), "grabcut")
    back = ImageEmbedding.from_bytes(emb.to_bytes(dtype=torch.uint8))
    assert torch.equal(back.features, image) and back.model_id == "grabcut"


def test_non_ascii_model_id_and_bytearray_input() -> None:
    emb = make(torch.ones(2, 2), model_id="modèle-ü")
    assert ImageEmbedding.from_bytes(bytearray(emb.to_bytes())).model_id == "modèle-ü"


def test_from_bytes_tensor_is_writable_and_owned() -> None:
    data = make(torch.zeros(4)).to_bytes(dtype=torch.float32)
    back = ImageEmbedding.from_bytes(data)
    back.features.add_(1)  # must not touch `data` nor warn about read-only memory
    assert ImageEmbedding.from_bytes(data).features.sum() == 0


def test_no_pickle_in_the_format() -> None:
    data = make(torch.randn(3, 4)).to_bytes()
    assert data.startswith(b"SAMEMB") and b"\x80\x04" not in data[:8]
    with pytest.raises(ValueError):
        ImageEmbedding.from_bytes(pickle.dumps(make(torch.randn(3, 4))))


@pytest.mark.parametrize("cut", [0, 3, 10, 30, 60, -1])
def test_truncated_bytes_raise_value_error(cut: int) -> None:
    data = make(torch.randn(1, 8, 4, 4)).to_bytes()
    with pytest.raises(ValueError):
        ImageEmbedding.from_bytes(data[:cut])


@pytest.mark.parametrize("position", [0, 6, 7, 12, 20, 40, -1])
def test_corrupt_bytes_raise_value_error(position: int) -> None:
    data = bytearray(make(torch.randn(1, 8, 4, 4)).to_bytes())
    data[position] ^= 0x5A
    with pytest.raises(ValueError):
        ImageEmbedding.from_bytes(bytes(data))


def test_extra_trailing_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        ImageEmbedding.from_bytes(make(torch.randn(4)).to_bytes() + b"\x00")


@pytest.mark.parametrize("sizes", [((0, 5), (1, 1)), ((5, 5), (5,)), ((5.0, 5), (5, 5))], ids=str)
def test_bad_sizes_raise_value_error(sizes: tuple) -> None:
    with pytest.raises(ValueError):
        ImageEmbedding(torch.zeros(1), sizes[0], sizes[1], "m")


def test_unsupported_dtype_raises_value_error() -> None:
    with pytest.raises(ValueError):
        make(torch.zeros(2)).to_bytes(dtype=torch.complex64)
