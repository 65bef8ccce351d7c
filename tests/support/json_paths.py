"""Key paths into JSON documents, for sweeps that set one field at a time to a hostile value."""

from __future__ import annotations

import json
from typing import Any


def leaf_paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON document (objects and list items, inner nodes included)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    paths = []
    for key, value in items:
        paths.append((*prefix, key))
        paths.extend(leaf_paths(value, (*prefix, key)))
    return paths


def replaced(doc: Any, path: tuple, value: Any) -> Any:
    """A deep copy of `doc` (through JSON) with the field at `path` set to `value`."""
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc
