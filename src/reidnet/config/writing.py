"""The spec written out: every key with its default (`reidnet default-specs`), a run's resolved spec
and the JSON schema the REST API serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reidnet.config.paths import resolve_relative_paths
from reidnet.config.schema import ACTIONS, ExperimentSpec


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of the whole spec, defaults included (served by the REST API)."""
    return ExperimentSpec.model_json_schema()


def default_spec_dict(results_dir: str | None = None) -> dict[str, Any]:
    """Every key with its default value, as plain YAML-ready data."""
    return _written(ExperimentSpec(results_dir=results_dir))


def _written(spec: ExperimentSpec) -> dict[str, Any]:
    """A spec as reidnet writes it to a file. `wandb.enable` says false: reidnet never logs to
    W&B, and a file reidnet wrote itself must not warn that a W&B setting is ignored when it is
    read back (TAO's default, true, did)."""
    data = spec.model_dump(mode="json")
    data["wandb"]["enable"] = False
    return data


def write_default_specs(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write `<action>.yaml` for every action, each holding every key with its default."""
    results_dir = Path(results_dir).resolve()  # the files may move; paths in them must not
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "specs"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for action in ACTIONS:
        target = out_dir / f"{action}.yaml"
        header = (
            f"# reidnet {action} spec: every key with its default value.\n"
            f"# Run it with: reidnet {action} -e {target} [key.sub=value ...]\n"
        )
        body = yaml.safe_dump(
            default_spec_dict(str(results_dir)), sort_keys=False, default_flow_style=None
        )
        target.write_text(header + body)
        written.append(target)
    return written


def dump_spec(spec: ExperimentSpec) -> str:
    """The resolved spec as YAML text, every path absolute.

    A spec's relative paths are relative to the folder the command ran in, but once written to
    a file they would resolve against the file's folder: `resolved_spec.yaml`, the record of a
    run, must rerun from wherever it is given.
    """
    data = _written(spec)
    resolve_relative_paths(data, Path.cwd())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
