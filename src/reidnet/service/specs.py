"""Job specs: the user's partial overrides, checked, merged onto defaults and given server paths.

Every path a job reads or writes is chosen by the server: its results go to its own folder, its
data comes from the experiment's datasets and its checkpoint from the parent train job. A user
value for any path-valued key is refused, so no job can touch files outside its folder, its
datasets and its parent's checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidnet.config import (
    ExperimentSpec,
    default_spec_dict,
    shown,
    shown_key,
    validate_spec,
)
from reidnet.contracts import default_onnx_file
from reidnet.errors import ReidnetError

# Leaf names, and name endings, of path-valued spec keys. Matching by name keeps keys that later
# sections add (an export engine file, a config output) server-owned without a list to update.
_PATH_NAMES = frozenset(
    {
        "results_dir",
        "checkpoint",
        "pretrained_model_path",
        "resume_training_checkpoint_path",
        "test_dataset",
        "query_dataset",
        "output_file",
        "onnx_file",
    }
)
_PATH_ENDINGS = ("_dir", "_file", "_path", "_plot", "_folder")

# Sections a child job (evaluate, inference, export, fine-tune) takes from its source train job,
# so the model it rebuilds matches the checkpoint and the data is read the same way.
INHERITED_SECTIONS = ("model", "dataset", "re_ranking")


def is_server_owned(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf in _PATH_NAMES or leaf.endswith(_PATH_ENDINGS)


def server_owned_keys(specs: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of `specs` that are path-valued and carry a value (null counts as unset)."""
    found = []
    for key, value in specs.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not is_server_owned(dotted):
            found += server_owned_keys(value, dotted + ".")
        elif is_server_owned(dotted) and value is not None:
            found.append(dotted)
    return found


def without_server_owned(specs: dict[str, Any]) -> dict[str, Any]:
    """`specs` with every path-valued key removed (the defaults shown to users)."""
    kept = {}
    for key, value in specs.items():
        if is_server_owned(key):
            continue
        kept[key] = without_server_owned(value) if isinstance(value, dict) else value
    return kept


def all_server_owned_keys() -> list[str]:
    """Every path-valued key of the spec, for the schema endpoint."""

    def walk(node: dict[str, Any], prefix: str) -> list[str]:
        keys = []
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if is_server_owned(dotted):
                keys.append(dotted)
            elif isinstance(value, dict):
                keys += walk(value, dotted + ".")
        return keys

    return walk(default_spec_dict(), "")


def default_specs() -> dict[str, Any]:
    """The whole spec with its defaults, path keys left out: edit it and submit it back."""
    return without_server_owned(default_spec_dict())


MAX_JSON_DEPTH = 12  # a spec nests 4 deep (dataset.train_dataset_dir[0].path)


def check_json_value(value: Any, where: str = "specs") -> None:
    """Refuse JSON the service cannot store and send back: nesting deeper than MAX_JSON_DEPTH
    (recursive code would overflow), strings holding lone surrogates (JSON's "\\ud800":
    not Unicode, so no UTF-8 response can carry them) and NUL characters (PostgreSQL refuses
    them). Iterative, so any depth is safe."""
    stack = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ReidnetError(
                f"{shown_key(where)} nests deeper than {MAX_JSON_DEPTH} levels (at "
                f"{shown_key(path)}): a spec is sections of keys, 4 levels at most"
            )
        if isinstance(node, str):
            _check_text(node, path)
        elif isinstance(node, dict):
            for key, child in node.items():
                _check_text(str(key), f"{path}.<key>")
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:  # PostgreSQL stores no NUL in text or JSON (SQLite would)
        raise ReidnetError(
            f"{shown_key(ascii(path))} holds a NUL character (\\u0000) at character "
            f"{text.index(chr(0))}: the database cannot store it; leave it out"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ReidnetError(
            f"{shown_key(ascii(path))} holds a string that is not valid Unicode (a lone "
            f"surrogate, {text[error.start]!a}, at character {error.start}): send text "
            "as UTF-8 or as surrogate pairs"
        ) from None


def _check_sections(specs: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
    """Every key that is a section in the spec (model, train.optim, ...) must be a mapping."""
    for key, value in specs.items():
        default = defaults.get(key)
        if not isinstance(default, dict):
            continue
        if not isinstance(value, dict):
            raise ReidnetError(
                f"specs.{prefix}{key} must be a section (a mapping of keys, e.g. "
                f'{{"{key}": {{...}}}}), got {shown(value)}: give the keys to change, or leave '
                f"{prefix}{key} out to keep its defaults"
            )
        _check_sections(value, default, f"{prefix}{key}.")


def check_user_specs(specs: Any) -> dict[str, Any]:
    """Refuse a non-mapping, a section that is not a mapping, JSON the service cannot store
    (too deep, lone surrogates), and any user value for a path-valued key."""
    if specs is None:
        return {}
    if not isinstance(specs, dict):
        raise ReidnetError(f"specs must be a mapping of spec sections, got {type(specs).__name__}")
    check_json_value(specs)
    _check_sections(specs, default_spec_dict(), "")
    owned = server_owned_keys(specs)
    if owned:
        raise ReidnetError(
            f"spec key {owned[0]} is set by the server (every path a job reads or writes is): "
            "remove it from specs. Datasets come from the experiment, checkpoints from "
            "parent_job_id, outputs go to the job's folder"
            + (f" (also set: {', '.join(owned[1:])})" if owned[1:] else "")
        )
    return strip_nulls(specs)


def strip_nulls(specs: dict[str, Any]) -> dict[str, Any]:
    """Drop path keys left at null (the defaults hold them so), keeping every other value."""
    kept = {}
    for key, value in specs.items():
        if value is None and is_server_owned(key):
            continue
        kept[key] = strip_nulls(value) if isinstance(value, dict) else value
    return kept


def inherited_specs(source_specs: dict[str, Any] | None) -> dict[str, Any]:
    if not source_specs:
        return {}
    return {k: copy.deepcopy(v) for k, v in source_specs.items() if k in INHERITED_SECTIONS}


@dataclass
class JobPaths:
    """The server-chosen paths of one job."""

    job_dir: Path
    train_dirs: list[str]
    test_dir: str | None = None
    query_dir: str | None = None
    checkpoint: str | None = None  # evaluate / inference / export
    pretrained: str | None = None  # train: fine-tune from another train job


def resolved_spec(action: str, user_specs: dict[str, Any], paths: JobPaths) -> dict[str, Any]:
    """The spec a job runs: the user's overrides plus every server-owned path.

    Only keys the user set and the paths appear, so the library still tells an explicit model
    setting (checked against the checkpoint) from a default.
    """
    spec = copy.deepcopy(user_specs)
    spec["results_dir"] = str(paths.job_dir)
    dataset = spec.setdefault("dataset", {})
    if paths.train_dirs:
        dataset["train_dataset_dir"] = list(paths.train_dirs)
    if paths.test_dir and paths.query_dir:
        dataset["test_dataset_dir"] = paths.test_dir
        dataset["query_dataset_dir"] = paths.query_dir
    if action == "train" and paths.pretrained:
        model = spec.setdefault("model", {})
        model.setdefault("pretrain_choice", "self")
        model["pretrained_model_path"] = paths.pretrained
    if action in ("evaluate", "inference", "export"):
        spec.setdefault(action, {})["checkpoint"] = paths.checkpoint
    if action == "export":
        spec["export"]["onnx_file"] = str(default_onnx_file(paths.job_dir))
    return spec


def validate_job_spec(action: str, spec: dict[str, Any]) -> ExperimentSpec:
    """Validate a resolved spec as the job will load it; the error names the key."""
    return validate_spec(spec, source=f"{action} specs")
