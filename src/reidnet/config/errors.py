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
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
                return None
            model = field.annotation
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
    text = str(part)
    return isinstance(part, str) and "[" in text


def _unknown_key_message(loc: list[str]) -> str:
    name = loc[-1]
    section_path = [p for p in loc[:-1] if not p.isdigit()]
    section = ".".join(section_path) or "top level"
    valid = sorted(_fields_at(section_path))
    # difflib is quadratic in the name's length: a long name is no one's typo.
    suggestion = difflib.get_close_matches(name, valid, n=1, cutoff=0.5) if len(name) < 100 else []
    if not suggestion:
        lowered = {v.lower(): v for v in valid}
        if len(name) < 100:
            suggestion = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
            suggestion = [lowered[s] for s in suggestion]
    hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
    return (
        f"unknown key {shown(name)} in section {shown_key(section)}{hint} "
        f"(valid keys: {', '.join(valid)})"
    )


def _fields_at(section_path: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentSpec
    for part in section_path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif part == "train_dataset_dir":
            model = TrainFolder
        else:
            return []
    return list(model.model_fields)
