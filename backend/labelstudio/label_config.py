"""Read a Label Studio labeling config and decide where a SAM mask should go.

LS sends its XML config with every /predict. We need three things from it: which task field
holds the image (`<Image value="$image">`), which controls are bound to that image, and which
of them should receive the mask. The XML comes from a project admin, so it is parsed with the
standard library after refusing DOCTYPE/ENTITY declarations (the entity-expansion attacks
defusedxml guards against need one of those to exist).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache

from backend.errors import BadRequest, Unprocessable
from backend.outputs import OUTPUT_TAGS, OUTPUT_TYPES, REGION_TYPES, OutputType

# LS matches tag names case-insensitively; we compare lower-cased names.
OUTPUT_TAG_TYPES = {tag: kind for kind, tag in REGION_TYPES.items()}
# The smart controls whose regions are prompts (context.result[].type of a click).
PROMPT_TYPES: tuple[str, ...] = ("keypointlabels", REGION_TYPES["rectangle"])
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
MAX_CONFIG_CHARS = 1_000_000


@dataclass(frozen=True)
class ImageTag:
    name: str
    value_key: str  # task.data key, without the leading "$"


@dataclass(frozen=True)
class Control:
    tag: str  # lower-cased tag name, e.g. "brushlabels"
    name: str
    to_names: tuple[str, ...]
    labels: tuple[str, ...]
    smart: bool


@dataclass(frozen=True)
class LabelConfig:
    images: dict[str, ImageTag]
    controls: dict[str, Control]

    def image(self, name: str) -> ImageTag:
        """The Image tag a region points at; a region naming an unknown image is a client error."""
        try:
            return self.images[name]
        except KeyError:
            raise BadRequest(
                f"the label config has no <Image name={name!r}>",
                "send regions whose to_name is an Image tag of the project's label config",
            ) from None

    def bound_to(self, image_name: str) -> list[Control]:
        return [c for c in self.controls.values() if image_name in c.to_names]


@dataclass(frozen=True)
class OutputTarget:
    from_name: str
    to_name: str
    output_type: OutputType
    label: str


def _attr(elem: ET.Element, name: str) -> str | None:
    """Attribute lookup ignoring case: LS itself accepts `toName` and `toname`."""
    wanted = name.lower()
    for key, value in elem.attrib.items():
        if key.lower() == wanted:
            return value
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def parse_label_config(xml: object) -> LabelConfig:
    """Parse the config once per distinct string (LS resends the same one with every click)."""
    if not isinstance(xml, str) or not xml.strip():
        raise BadRequest("label_config is missing or not a string", "send the project's label_config with /predict")
    return _parse(xml)


@lru_cache(maxsize=64)
def _parse(xml: str) -> LabelConfig:
    if len(xml) > MAX_CONFIG_CHARS:
        raise BadRequest(f"label_config is longer than {MAX_CONFIG_CHARS} characters")
    if _FORBIDDEN.search(xml):
        raise BadRequest(
            "label_config contains a DOCTYPE or ENTITY declaration", "remove it; LS configs never need one"
        )
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise BadRequest(f"label_config is not valid XML: {exc}") from None

    images: dict[str, ImageTag] = {}
    controls: dict[str, Control] = {}
    for elem in root.iter():
        tag = elem.tag.lower() if isinstance(elem.tag, str) else ""
        name = _attr(elem, "name")
        if not name:
            continue
        if tag == "image":
            value = (_attr(elem, "value") or "").strip()
            if value.startswith("$"):
                images[name] = ImageTag(name=name, value_key=value[1:])
        elif tag in OUTPUT_TAG_TYPES or tag in PROMPT_TYPES:
            to_names = tuple(n.strip() for n in (_attr(elem, "toName") or "").split(",") if n.strip())
            labels = tuple(
                v
                for child in elem.iter()
                if child is not elem
                and isinstance(child.tag, str)
                and child.tag.lower() == "label"
                and (v := _attr(child, "value")) is not None
            )
            controls[name] = Control(
                tag=tag, name=name, to_names=to_names, labels=labels, smart=_truthy(_attr(elem, "smart"))
            )
    return LabelConfig(images=images, controls=controls)


def choose_output(config: LabelConfig, to_name: str, prompt_controls: set[str], label: str | None) -> OutputTarget:
    """Pick the control that receives the mask for prompts drawn on image `to_name`.

    BrushLabels wins (it is exactly what SAM produces), then PolygonLabels. RectangleLabels is
    the fallback for box-only projects, but never the prompt's own control: a smart rectangle
    used as the prompt would just be echoed back as a second, tighter copy of itself. Among
    the remaining rectangle controls a non-smart one is preferred (it exists to hold results).
    The label is the prompt's own when the output control has it, else the control's first.
    """
    config.image(to_name)
    bound = config.bound_to(to_name)
    by_type: dict[str, list[Control]] = {kind: [] for kind in OUTPUT_TYPES}
    for control in bound:
        kind = OUTPUT_TAG_TYPES.get(control.tag)
        if kind == "rectangle" and control.name in prompt_controls:
            continue
        if kind:
            by_type[kind].append(control)
    by_type["rectangle"].sort(key=lambda c: c.smart)
    for kind in OUTPUT_TYPES:
        for control in by_type[kind]:
            if not control.labels:
                continue
            chosen = label if label in control.labels else control.labels[0]
            return OutputTarget(from_name=control.name, to_name=to_name, output_type=kind, label=chosen)
    *others, last = OUTPUT_TAGS.values()
    raise Unprocessable(
        f"no {', '.join(others)} or (non-prompt) {last} with labels is bound to image {to_name!r}",
        f'add <BrushLabels name="mask" toName="{to_name}"><Label value="..."/></BrushLabels> '
        f'or <PolygonLabels name="polygon" toName="{to_name}">...</PolygonLabels> '
        f"(or a non-prompt <RectangleLabels> for boxes only)",
    )
