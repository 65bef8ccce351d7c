"""What a model family tells the shared loader and the backend: the one contract between them.

Each family package (`sam1`, `sam2`, `mobile_sam`, `sam_hq`) defines one `Family` in its
`family.py`; `sam_model.families` lists them. Nothing else about a family is needed to load
its official files, recognise them, and serve clicks and automatic masks from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sam_model.common.decoding import Predictor

State = Mapping[str, torch.Tensor]


def _whole_file(state: State) -> dict[str, torch.Tensor]:
    return dict(state)


def _nothing(model: nn.Module) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """One model family: how to build, recognise and serve each of its model types.

    - `name`: short id ("sam1", "sam2", ...); `label`: what people call it ("SAM 2.1").
    - `model_types`: the SAM_MODEL values it serves, official ones first; `test_types`:
      random-weight configurations for tests (buildable, never downloaded).
    - `build(model_type)`: the network with random weights (called under the meta device).
    - `identify(state)`: the model type a state_dict belongs to, or None if not this family.
    - `image_state(state)`: the keys the image path uses (SAM 2 files also hold video parts).
    - `finish(model)`: makes non-persistent buffers real after loading on the meta device.
    - `predictor(model, model_id, precision, compile)`: the stateless predictor.
    - `amg_defaults`: the family's own automatic-mask-generator defaults that differ from v1.
    """

    name: str
    label: str
    model_types: tuple[str, ...]
    build: Callable[[str], nn.Module]
    identify: Callable[[State], str | None]
    predictor: Callable[[nn.Module, str, str, bool], Predictor]
    test_types: tuple[str, ...] = ()
    image_state: Callable[[State], dict[str, torch.Tensor]] = _whole_file
    finish: Callable[[nn.Module], None] = _nothing
    amg_defaults: Mapping[str, Any] = field(default_factory=dict)
