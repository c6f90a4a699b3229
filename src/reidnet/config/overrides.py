"""`key.sub=value` overrides from the command line: parsed, typed as YAML and set in a raw spec."""

from __future__ import annotations

import re
from typing import Any

import yaml

from reidnet.config.display import shown
from reidnet.config.yaml_guard import safe_load_yaml
from reidnet.errors import ReidnetError

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[str, Any]:
    """Split `train.num_epochs=5` into the key and its value typed as a YAML scalar or list."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ReidnetError(
            f"override {shown(text)} is not of the form key.sub=value "
            "(e.g. train.num_epochs=5 or dataset.pixel_mean=[0.5,0.5,0.5])"
        )
    try:
        value = safe_load_yaml(value_text) if value_text.strip() else None
    except yaml.YAMLError as error:
        raise ReidnetError(
            f"override {shown(text)}: the value is not valid YAML ({error})"
        ) from None
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
        value = float(value)  # PyYAML follows YAML 1.1, which reads 1e-3 as a string
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set `key` (dotted) in the raw spec `raw`, making the sections on the way as needed."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ReidnetError(f"override {key}: {prefix} is a value, not a section, in {source}")
        node = child
    node[parts[-1]] = value
