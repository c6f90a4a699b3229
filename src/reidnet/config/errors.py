"""Pydantic's validation errors as messages a person can act on: each names the key path, what
was expected and, for an unknown key, the closest valid one (`did you mean 'base_lr'?`)."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from reidnet.config.display import shown, shown_key
from reidnet.config.schema import ExperimentSpec, TrainFolder
from reidnet.errors import ReidnetError


def invalid_spec(error: ValidationError, source: str) -> ReidnetError:
    """The ReidnetError for a spec that failed validation: one line per problem."""
    lines = [_explain(e) for e in error.errors(include_url=False)]
    return ReidnetError(f"{source}: invalid spec\n" + "\n".join(f"  - {m}" for m in lines))


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a section (a mapping of keys)",
    "model_type": "a section (a mapping of keys)",
    "model_attributes_type": "a section (a mapping of keys)",
}

_RANGE_ERRORS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _explain(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    key = shown_key(".".join(loc) or "spec")
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in _TYPE_WORDS:
        return f"{key}: expected {_TYPE_WORDS[kind]}, got {shown(got)} ({type(got).__name__})"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{key}: {shown(got)} is not one of the allowed values {expected}"
    if kind == "missing":
        return f"{key}: this key is required but missing"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind in _RANGE_ERRORS:
        return f"{key}: {_allowed_range(error)} (got {shown(got)})"
    if kind == "finite_number":
        return f"{key}: must be a finite number, not {shown(got)} {_finite_hint(loc)}"
    return f"{key}: {error['msg']} (got {shown(got)})"


def _finite_hint(loc: list[str]) -> str:
    """Where inf and nan come from, and the default to write instead."""
    field = _field_at(loc)
    default = field.get_default(call_default_factory=True) if field else None
    if loc and loc[-1].isdigit() and isinstance(default, list) and int(loc[-1]) < len(default):
        default = default[int(loc[-1])]
    example = f", e.g. the default {default}" if isinstance(default, (int, float)) else ""
    return (
        "(YAML's .inf/.nan, JSON's Infinity/NaN and overflows such as 1e309 are refused): "
        f"write an ordinary number{example}"
    )


def _allowed_range(error: dict[str, Any]) -> str:
    """'must be from 16 to 2048': both bounds of the field, whichever one was crossed."""
    context = error.get("ctx", {})
    bounds = _field_bounds([str(p) for p in error["loc"]])
    low = bounds.get("ge", context.get("ge"))
    high = bounds.get("le", context.get("le"))
    if low is not None and high is not None:
        return f"must be from {low} to {high}"
    if "gt" in context or "gt" in bounds:
        return f"must be greater than {context.get('gt', bounds.get('gt'))}"
    if low is not None:
        return f"must be at least {low}"
    if "lt" in context:
        return f"must be less than {context['lt']}"
    return f"must be at most {high}"


def _field_at(loc: list[str]) -> FieldInfo | None:
    """The spec field at `loc` (a list item's: the list's field), None if there is none."""
    model: type[BaseModel] = ExperimentSpec
    field = None
    for part in loc:
        if part.isdigit():
            break
        if field is not None:
            section = _section_model(field)
            if section is None:
                return None
            model = section
        field = model.model_fields.get(part)
        if field is None:
            return None
    return field


def _field_bounds(loc: list[str]) -> dict[str, Any]:
    """The ge/le/gt/lt constraints of the field at `loc` (list items: the item's own)."""
    field = _field_at(loc)
    if field is None:
        return {}
    constraints = list(field.metadata)
    if loc and loc[-1].isdigit():  # a list item: the bounds of the item type (list[Epoch])
        item = typing.get_args(field.annotation)
        constraints = [c for info in typing.get_args(item[0])[1:] for c in _metadata(info)]
    found = {}
    for constraint in constraints:
        for name in ("ge", "le", "gt", "lt"):
            if getattr(constraint, name, None) is not None:
                found[name] = getattr(constraint, name)
    return found


def _metadata(info: Any) -> list[Any]:
    return list(getattr(info, "metadata", [info]))


def _is_union_tag(part: Any) -> bool:
    """Pydantic puts union member names (e.g. 'str', 'list[...]') into error locations."""
    return isinstance(part, str) and "[" in part


def _unknown_key_message(loc: list[str]) -> str:
    name = loc[-1]
    section_path = [p for p in loc[:-1] if not p.isdigit()]
    section = ".".join(section_path) or "top level"
    valid = sorted(_fields_at(section_path))
    suggestion = _closest(name, valid)
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    return (
        f"unknown key {shown(name)} in section {shown_key(section)}{hint} "
        f"(valid keys: {', '.join(valid)})"
    )


def _closest(name: str, valid: list[str]) -> str | None:
    """The valid key that `name` is a likely typo of (case aside), None if none is close."""
    if len(name) >= 100:  # difflib is quadratic in the name's length: no one's typo is that long
        return None
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if match:
        return match[0]
    lowered = {v.lower(): v for v in valid}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def _fields_at(section_path: list[str]) -> list[str]:
    """The keys of the section at `section_path`, empty if there is no such section."""
    model: type[BaseModel] = ExperimentSpec
    for part in section_path:
        section = _section_model(model.model_fields.get(part))
        if section is None and part == "train_dataset_dir":
            section = TrainFolder  # a list of entries, each a TrainFolder section
        if section is None:
            return []
        model = section
    return list(model.model_fields)


def _section_model(field: FieldInfo | None) -> type[BaseModel] | None:
    """The model of a section-valued field; None for a field that holds a value."""
    annotation = field.annotation if field else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
