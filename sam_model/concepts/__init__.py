"""Concept engines: labelled pre-annotation from text. Each label becomes a prompt, and every
instance the engine finds becomes a region with that label.

Two engines, both run through Hugging Face `transformers` (an optional dependency, imported
only when an engine is loaded): SAM 3 (noun phrase or exemplar box in, instances with masks
out) and Grounding DINO (text in, boxes out; the served SAM model then turns each box into a
mask). An image's backbone features are computed once and serve any number of prompts.
"""

from sam_model.concepts.engine import ConceptEngine, Instance, Thresholds
from sam_model.concepts.features import ConceptFeatures
from sam_model.concepts.loading import ENGINE_KINDS, load_concept_engine

__all__ = ["ENGINE_KINDS", "ConceptEngine", "ConceptFeatures", "Instance", "Thresholds", "load_concept_engine"]
