"""The spec keys that hold paths, and how the relative ones of a spec file become absolute."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Keys that hold file or folder paths. A relative path written in a spec file means relative to
# that file's folder (as in most tools' config files); on the command line, to the current folder.
PATH_KEYS = (
    "results_dir",
    "model.pretrained_model_path",
    "dataset.test_dataset_dir",
    "dataset.query_dataset_dir",
    "train.results_dir",
    "train.resume_training_checkpoint_path",
    *(
        f"{action}.{key}"
        for action in ("evaluate", "inference")
        for key in ("results_dir", "checkpoint", "onnx_file", "test_dataset", "query_dataset")
    ),
    "evaluate.output_sampled_matches_plot",
    "evaluate.output_cmc_curve_plot",
    "inference.output_file",
    "export.results_dir",
    "export.checkpoint",
    "export.onnx_file",
)


def resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a spec file's PATH_KEYS and train folders absolute from
    `base`, the file's folder (in place; other values are left to validation)."""

    def resolved(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return os.path.normpath(base / value)  # configs/../data is printed as data
        return value

    for dotted in PATH_KEYS:
        *parents, name = dotted.split(".")
        section = raw
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict) and name in section:
            section[name] = resolved(section[name])
    dataset = raw.get("dataset")
    if not isinstance(dataset, dict) or "train_dataset_dir" not in dataset:
        return
    folders = dataset["train_dataset_dir"]
    if isinstance(folders, str):
        dataset["train_dataset_dir"] = resolved(folders)
    elif isinstance(folders, list):
        dataset["train_dataset_dir"] = [
            {**entry, "path": resolved(entry.get("path"))}
            if isinstance(entry, dict)
            else resolved(entry)
            for entry in folders
        ]
