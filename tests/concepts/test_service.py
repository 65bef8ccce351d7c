"""The concept engine's settings, loading errors and features cache (real Redis)."""

from __future__ import annotations

import os

import pytest
import torch

from backend.cache.embeddings import FEATURES, EmbeddingCache
from backend.concepts.service import DEFAULT_MODELS, ConceptService, concept_spec, features_check
from backend.engines.engine import EngineUnavailable
from backend.settings import Settings
from sam_model.concepts import ConceptFeatures

MB = 2**20


def features(model_id: str = "grounding-dino:tiny", seed: int = 0) -> ConceptFeatures:
    generator = torch.Generator().manual_seed(seed)
    return ConceptFeatures(
        {
            "feature.0": torch.randn(1, 8, 12, 16, generator=generator),
            "mask.0": torch.rand(1, 12, 16, generator=generator) > 0.5,
        },
        (90, 120),
        (96, 128),
        model_id,
    )


def test_features_round_trip_through_redis_as_fp16(redis_server) -> None:
    original = features()
    writer = EmbeddingCache(16 * MB, redis_server.url, codec=FEATURES, key_prefix="t:")
    assert writer.get_or_compute("img", lambda: original) == (original, "computed")
    reader = EmbeddingCache(16 * MB, redis_server.url, codec=FEATURES, key_prefix="t:")
    got, level = reader.get_or_compute("img", lambda: pytest.fail("must come from Redis"))
    assert level == "redis" and got.model_id == original.model_id
    assert (got.original_size, got.input_size) == (original.original_size, original.input_size)
    assert torch.equal(got.tensors["feature.0"], original.tensors["feature.0"].half())
    assert torch.equal(got.tensors["mask.0"], original.tensors["mask.0"])
    assert reader.get_or_compute("img", lambda: pytest.fail("now local"))[1] == "local"


def test_another_models_features_in_redis_are_a_miss(redis_server) -> None:
    EmbeddingCache(0, redis_server.url, codec=FEATURES).get_or_compute("img", lambda: features("sam3:other"))
    rejected = []
    cache = EmbeddingCache(
        16 * MB,
        redis_server.url,
        codec=FEATURES,
        check=features_check("grounding-dino:tiny"),
        on_reject=lambda: rejected.append(1),
    )
    got, level = cache.get_or_compute("img", lambda: features(seed=1))
    assert level == "computed" and got.model_id == "grounding-dino:tiny" and rejected == [1]


def test_settings_choose_the_engine_and_its_default_model() -> None:
    assert concept_spec(Settings()) is None
    spec = concept_spec(Settings(concept_engine="Grounding-DINO"))
    assert (spec.kind, spec.source, spec.allow_download) == ("grounding-dino", DEFAULT_MODELS["grounding-dino"], False)
    spec = concept_spec(Settings(concept_engine="sam3", concept_model="/models/sam3", hf_token="hf_x"))
    assert (spec.source, spec.token, spec.model_id) == ("/models/sam3", "hf_x", "sam3:/models/sam3")
    assert spec.predictions_id("sam-x") == "sam3:/models/sam3"
    assert concept_spec(Settings(concept_engine="grounding-dino")).predictions_id("sam-x").endswith("+sam-x")
    assert concept_spec(Settings(concept_engine="sam3", concept_score_threshold="0.2")).score_threshold == 0.2


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (Settings(concept_engine="dino"), "CONCEPT_ENGINE"),
        (Settings(concept_engine="sam3", concept_score_threshold="high"), "CONCEPT_SCORE_THRESHOLD"),
        (Settings(concept_engine="sam3", concept_score_threshold="1.5"), "CONCEPT_SCORE_THRESHOLD"),
        (Settings(concept_engine="sam3", concept_score_threshold="nan"), "CONCEPT_SCORE_THRESHOLD"),
    ],
)
def test_bad_settings_stop_the_start(settings, words) -> None:
    with pytest.raises(ValueError, match=words):
        concept_spec(settings)


def test_a_model_that_cannot_load_is_a_503_saying_how_to_get_it(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = concept_spec(Settings(concept_engine="sam3"))

    def loader(*args, **kwargs):
        assert os.environ["HF_HUB_OFFLINE"] == "1"  # no download asked for: the hub is never called
        raise OSError("no sam3 model there")

    service = ConceptService(spec, EmbeddingCache(0, codec=FEATURES), loader=loader)
    with pytest.raises(EngineUnavailable) as err:
        service.load()
    assert err.value.status == 503 and "no sam3 model there" in err.value.message
    assert "CONCEPT_DOWNLOAD=true" in err.value.fix and "HF_TOKEN" in err.value.fix
    assert service.info()["error"] == err.value.message and service.info()["loaded"] is False


def test_the_engine_loads_in_bf16_on_a_gpu_and_fp32_on_the_cpu() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for precision in ("auto", "bf16", "fp16"):
        assert concept_spec(Settings(concept_engine="sam3", sam_precision=precision)).dtype(cuda) == torch.bfloat16
    assert concept_spec(Settings(concept_engine="sam3", sam_precision="fp32")).dtype(cuda) == torch.float32
    assert concept_spec(Settings(concept_engine="sam3", sam_precision="bf16")).dtype(cpu) == torch.float32
    asked = {}

    def loader(kind, source, **options):
        asked.update(options)
        raise OSError("stop here")

    spec = concept_spec(Settings(concept_engine="grounding-dino", sam_device="cpu"))
    with pytest.raises(EngineUnavailable):
        ConceptService(spec, EmbeddingCache(0, codec=FEATURES), loader=loader).load()
    assert (asked["device"], asked["dtype"]) == ("cpu", torch.float32)
