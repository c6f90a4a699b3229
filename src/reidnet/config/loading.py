"""Loading a spec: a YAML file (relative paths from its folder), a dict merged on top and
`key.sub=value` overrides, validated into an ExperimentSpec or refused with a ReidnetError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reidnet.config.display import shown
from reidnet.config.errors import invalid_spec
from reidnet.config.overrides import parse_override, set_dotted
from reidnet.config.paths import resolve_relative_paths
from reidnet.config.schema import ExperimentSpec
from reidnet.config.yaml_guard import safe_load_yaml
from reidnet.errors import ReidnetError


def load_spec(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
) -> ExperimentSpec:
    """Load a spec from a YAML file (or a dict), apply `key.sub=value` overrides and validate.

    Raises ReidnetError naming the file and the offending key on any problem.
    """
    source = str(path) if path is not None else "spec"
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        resolve_relative_paths(raw, Path(path).resolve().parent)
    if data is not None:
        raw = deep_merge(raw, data)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value, source)
    return validate_spec(raw, source)


def validate_spec(raw: dict[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a nested dict as an ExperimentSpec, translating pydantic errors for people."""
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise invalid_spec(error, source) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReidnetError(f"spec file {path} does not exist: check the path given to -e")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReidnetError(
            f"{path}: not UTF-8 text (byte {shown(raw[error.start : error.start + 1])} at "
            f"offset {error.start}): save the spec file as UTF-8"
        ) from None
    try:
        loaded = safe_load_yaml(text)
    except ReidnetError as error:
        raise ReidnetError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ReidnetError(f"{path}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ReidnetError(
            f"{path}: a spec must be a mapping of sections (model, dataset, train, ...), "
            f"got a {type(loaded).__name__}"
        )
    return loaded


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, section by section; neither input is changed (the result
    shares no mutable value with them)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
