"""Every model family this library serves, and the lookups across them."""

from __future__ import annotations

from sam_model.common.family import Family, State
from sam_model.mobile_sam.family import FAMILY as MOBILE_SAM
from sam_model.sam1.family import FAMILY as SAM1
from sam_model.sam2.family import FAMILY as SAM2
from sam_model.sam_hq.family import FAMILY as SAM_HQ

FAMILIES: tuple[Family, ...] = (SAM1, SAM2, MOBILE_SAM, SAM_HQ)
# identify() asks the most specific family first: a SAM-HQ file also has SAM v1's encoder
# keys, so HQ must be asked before v1.
_IDENTIFY_ORDER: tuple[Family, ...] = (SAM2, SAM_HQ, MOBILE_SAM, SAM1)
_BY_TYPE = {t: f for f in FAMILIES for t in (*f.model_types, *f.test_types)}
# The model types of published checkpoints, and every buildable one (test configurations last).
OFFICIAL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)
MODEL_TYPES: tuple[str, ...] = (*OFFICIAL_TYPES, *(t for f in FAMILIES for t in f.test_types))


def family_of(model_type: str) -> Family:
    """The family serving `model_type`; ValueError naming the official types otherwise."""
    try:
        return _BY_TYPE[model_type]
    except KeyError:
        official = ", ".join(OFFICIAL_TYPES)
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {official}") from None


def identify(state: State) -> str | None:
    """The model type a checkpoint's state_dict belongs to, read from its keys and shapes."""
    return next((found for f in _IDENTIFY_ORDER if (found := f.identify(state)) is not None), None)


def known_families() -> str:
    """The families' names for messages, e.g. "SAM v1, SAM 2"."""
    return ", ".join(f.label for f in FAMILIES)
