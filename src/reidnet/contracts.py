"""What one module writes and another reads: the checkpoint's architecture, a training run's
status.json, the ONNX graph's names, and the file names the trainer, exporter, service and client
share.

Torch-free (the service and the client import it), so each contract is written down once and a
type checker can hold every reader to it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from reidnet._version import __version__
from reidnet.errors import ReidnetError

if TYPE_CHECKING:
    from reidnet.config import ExperimentSpec


# ---------------------------------------------------------------------------------------------
# The four actions of a spec: its sections, the CLI's commands, reidnet.train & co., the service's
# job kinds.

Action = Literal["train", "evaluate", "inference", "export"]
ACTIONS: tuple[Action, ...] = get_args(Action)


# ---------------------------------------------------------------------------------------------
# The values the model and loss keys allow. They are checked where values come in, the spec
# (config.py) and a checkpoint's architecture (Architecture.from_dict), once: the model and loss
# code takes them as given.

Backbone = Literal[
    "resnet_18", "resnet_34", "resnet_50", "resnet_101", "resnet_152", "mobilenet_v2"
]
Network = Literal["torchvision", "tao"]
LastStride = Literal[1, 2]
PretrainChoice = Literal["imagenet", "self", "none"]
Neck = Literal["bnneck", "no"]
NeckFeat = Literal["after", "before"]
MetricLossType = Literal["triplet", "center", "triplet_center"]
Sampler = Literal["softmax", "triplet", "softmax_triplet"]


# The input normalisation of TAO's ReIdentificationNet (RGB, on [0, 1] pixels): the defaults of
# dataset.pixel_mean / pixel_std, of a graph without metadata, and of TAO checkpoints.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.226, 0.226, 0.226)


# ---------------------------------------------------------------------------------------------
# The architecture a checkpoint records


class Architecture(BaseModel):
    """Everything needed to rebuild a trained network and feed it: the checkpoint's
    `architecture` entry (stored as `to_dict()`, plain values, so checkpoints load with
    `weights_only`) and the metadata of the ONNX graph exported from it (`onnx_metadata`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: Backbone
    network: Network  # which implementation of the backbone the weights fit
    feat_dim: Annotated[StrictInt, Field(gt=0)]
    last_stride: LastStride
    neck: Neck
    neck_feat: NeckFeat
    with_flip_feature: StrictBool
    input_height: Annotated[StrictInt, Field(gt=0)]
    input_width: Annotated[StrictInt, Field(gt=0)]
    pixel_mean: tuple[StrictFloat | StrictInt, ...]
    pixel_std: tuple[StrictFloat | StrictInt, ...]

    @field_validator("last_stride", mode="before")
    @classmethod
    def _no_bool_stride(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1: a Literal[1, 2] alone would take it
            raise ValueError("a boolean")
        return value

    @field_validator("pixel_mean", "pixel_std", mode="after")
    @classmethod
    def _floats(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in value)

    @classmethod
    def from_spec(cls, spec: ExperimentSpec) -> Architecture:
        """The architecture a spec trains."""
        model, data = spec.model, spec.dataset
        return cls(
            **{name: getattr(model, name) for name in (*ARCHITECTURE_FIELDS, "with_flip_feature")},
            input_height=model.input_height,
            input_width=model.input_width,
            pixel_mean=tuple(data.pixel_mean),
            pixel_std=tuple(data.pixel_std),
        )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Mapping[str, Any], source: str | os.PathLike = "the checkpoint"
    ) -> Architecture:
        """The `architecture` entry of a loaded checkpoint; errors name `source` (its file)."""
        if "architecture" not in checkpoint:
            raise ReidnetError(
                f"{os.fspath(source)} has no 'architecture' entry: it was not written by "
                "`reidnet train` or `reidnet convert`; give such a file, or a TAO checkpoint"
            )
        return cls.from_dict(checkpoint["architecture"], source)

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], source: str | os.PathLike = "the checkpoint"
    ) -> Architecture:
        """Checked: every field present (older files get ARCHITECTURE_DEFAULTS), none unknown,
        each of its type; an error names `source` and the field."""
        where = os.fspath(source)
        if not isinstance(values, Mapping):
            raise ReidnetError(
                f"{where}: its architecture is a {type(values).__name__}, not a mapping of "
                "fields; the file is damaged or was edited"
            )
        values = {**ARCHITECTURE_DEFAULTS, **values}
        names = list(cls.model_fields)
        missing = [name for name in names if name not in values]
        unknown = sorted(str(key) for key in values if key not in names)
        if missing or unknown:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ReidnetError(
                f"{where}: its architecture has {'; '.join(problems)} (fields: "
                f"{', '.join(names)}). A file from a newer reidnet needs that version; otherwise "
                "the file is damaged or was edited"
            )
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            name = str(error.errors()[0]["loc"][0])
            raise ReidnetError(
                f"{where}: architecture field {name} is {values[name]!r}, expected "
                f"{_expected(name)}; the file is damaged or was edited"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists for the pixel statistics), as checkpoints store them."""
        return self.model_dump(mode="json")

    def onnx_metadata(self, num_classes: int) -> dict[str, str]:
        """The metadata_props of the graph exported from this architecture: every field (text
        as is, the rest as JSON), and what a consumer needs beside them to feed the graph and
        read its output."""
        fields = {
            name: value if name in _TEXT_FIELDS else json.dumps(value)
            for name, value in self.to_dict().items()
        }
        return {
            METADATA_MARKER: __version__,
            **fields,
            "color_order": "RGB",
            "preprocessing": "resize to input_height x input_width (no aspect-ratio padding), "
            "pixels / 255, then (x - pixel_mean) / pixel_std per channel",
            "l2_normalized": "false",
            "num_classes": str(num_classes),
        }

    @classmethod
    def from_onnx_metadata(
        cls, metadata: Mapping[str, str], source: str | os.PathLike
    ) -> Architecture | None:
        """The architecture an exported graph records; None for a graph without reidnet
        metadata. Graphs exported before last_stride and neck were recorded read as TAO's
        defaults there (nothing that runs a graph depends on them)."""
        if METADATA_MARKER not in metadata:
            return None
        values: dict[str, Any] = {**_ONNX_DEFAULTS}
        try:
            for name in cls.model_fields:
                if name in metadata:
                    raw = metadata[name]
                    values[name] = raw if name in _TEXT_FIELDS else json.loads(raw)
        except ValueError as error:
            raise ReidnetError(
                f"{os.fspath(source)} carries reidnet metadata but its {name} entry "
                f"{metadata[name]!r} is unreadable ({error}): export it again with "
                "`reidnet export`"
            ) from None
        try:
            return cls.from_dict(values, source)
        except ReidnetError as error:
            raise ReidnetError(
                f"{error} (in the graph's reidnet metadata: export it again with "
                "`reidnet export`)"
            ) from None

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    def network_fields(self) -> dict[str, Any]:
        """The fields that fix the network's shape (ARCHITECTURE_FIELDS), by name."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}


# The fields of `model` a checkpoint fixes; a spec that sets one differently is warned about,
# and a run cannot resume with another value.
ARCHITECTURE_FIELDS = ("backbone", "network", "feat_dim", "last_stride", "neck", "neck_feat")
# What checkpoints written before a field existed were trained with.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {"network": "torchvision"}
# Graphs exported before these fields were recorded (see Architecture.from_onnx_metadata).
_ONNX_DEFAULTS: dict[str, Any] = {"last_stride": 1, "neck": "bnneck"}
_TEXT_FIELDS = {"backbone", "network", "neck", "neck_feat"}  # metadata strings, not JSON


def _expected(name: str) -> str:
    """What field `name` takes, as the error for a wrong value says it."""
    if name in ("feat_dim", "input_height", "input_width"):
        return "a positive integer"
    if name == "with_flip_feature":
        return "true or false"
    if name in ("pixel_mean", "pixel_std"):
        return "a list of numbers"
    return "one of " + ", ".join(map(str, get_args(Architecture.model_fields[name].annotation)))


# A checkpoint's header: what every reidnet checkpoint holds beside the weights (and, for
# reid_model_latest.pth, the resume state). runtime/checkpoint.py reads it back.
CHECKPOINT_FORMAT = "reidnet-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


def checkpoint_header(
    *, epoch: int, spec_dict: dict, identity_keys: list[str], architecture: Architecture
) -> dict[str, Any]:
    """The metadata part of a checkpoint; the trainer adds weights and optimizer states."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "reidnet_version": __version__,
        "epoch": epoch,
        "spec": spec_dict,
        "identity_keys": list(identity_keys),
        "num_classes": len(identity_keys),
        "architecture": architecture.to_dict(),
    }


# ---------------------------------------------------------------------------------------------
# A training run's status.json

TrainingState = Literal["running", "done", "interrupted"]
LOSS_PREFIX = "loss_"  # per-epoch records name each loss term loss_<term>


def losses_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The loss terms of a per-epoch record (a metrics.jsonl line), by term name."""
    return {
        key[len(LOSS_PREFIX) :]: value
        for key, value in record.items()
        if key.startswith(LOSS_PREFIX)
    }


class TrainingProgress(BaseModel):
    """Where a training run stands after its last epoch: the figures of status.json, and what
    the service shows as a train job's progress."""

    epoch: int | None = None
    num_epochs: int | None = None
    losses: dict[str, float] = Field(default_factory=dict)
    train_accuracy: float | None = None
    lr: float | None = None
    images_per_second: float | None = None
    eta_seconds: float | None = None
    validation: dict[str, Any] | None = None


class TrainingStatus(TrainingProgress):
    """status.json: the trainer rewrites it (atomically) after every epoch and on interruption.

    `latest` is the last epoch's record as metrics.jsonl holds it; the progress figures come from
    it, also for files written before they were stored on their own.
    """

    state: TrainingState
    epoch: int
    num_epochs: int
    checkpoint: str | None = None
    updated: float = Field(description="Unix time of the write.")
    latest: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _figures_from_latest(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("latest"), Mapping):
            return data
        latest = data["latest"]
        figures = {
            "losses": losses_of(latest),
            **{key: latest.get(key) for key in ("train_accuracy", "lr", "images_per_second")},
        }
        return {**figures, **data}

    @classmethod
    def after_epoch(
        cls,
        state: TrainingState,
        epoch: int,
        num_epochs: int,
        record: Mapping[str, Any],
        validation: dict[str, Any] | None,
        checkpoint: str | os.PathLike | None,
    ) -> TrainingStatus:
        """The status after `epoch` epochs (`record`: that epoch's per-epoch record); the ETA
        assumes the remaining epochs take as long as this one."""
        seconds = record.get("seconds", 0.0)
        return cls(
            state=state,
            epoch=epoch,
            num_epochs=num_epochs,
            latest={key: value for key, value in record.items() if key != "validation"},
            validation=validation,
            eta_seconds=seconds * max(0, num_epochs - epoch),
            checkpoint=os.fspath(checkpoint) if checkpoint else None,
            updated=time.time(),
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainingStatus | None:
        """The status in `path`; None when there is none yet. A file that is not a status
        raises a ReidnetError naming it."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ReidnetError(f"cannot read {os.fspath(path)}: {error}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise ReidnetError(
                f"{os.fspath(path)} is not a reidnet training status ({where}: {first['msg']})"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def progress(self) -> TrainingProgress:
        return TrainingProgress(
            **{name: getattr(self, name) for name in TrainingProgress.model_fields}
        )


# ---------------------------------------------------------------------------------------------
# The ONNX graph reidnet exports and reads back

INPUT_NAME = "input"  # float32 [batch, 3, H, W], normalised (TAO's name)
OUTPUT_NAME = "fc_pred"  # float32 [batch, feat_dim], not L2-normalised (TAO's name)
METADATA_MARKER = "reidnet_version"  # the metadata key that marks a graph reidnet exported


# ---------------------------------------------------------------------------------------------
# File names: what one module writes and another looks for

LATEST_CHECKPOINT = "reid_model_latest.pth"  # the newest checkpoint; resumes start here
BEST_CHECKPOINT = "reid_model_best.pth"  # the best validation mAP so far
ONNX_FILE = "reid_model.onnx"  # export's default target
METRICS_FILE = "metrics.jsonl"  # one record per epoch
STATUS_FILE = "status.json"  # TrainingStatus
EVALUATION_FILE = "results.json"  # evaluate's metrics

_EPOCH_CHECKPOINT = re.compile(r"model_epoch_(\d{3,})\.pth")


def epoch_checkpoint_name(epoch: int) -> str:
    """`model_epoch_012.pth`: the checkpoint written after `epoch` epochs."""
    return f"model_epoch_{epoch:03d}.pth"


def epoch_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The epoch checkpoints in `folder`, oldest epoch first."""
    found = []
    for path in Path(folder).glob("model_epoch_*.pth"):
        match = _EPOCH_CHECKPOINT.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a training run's folder: reid_model_latest.pth, else its last
    epoch checkpoint (the latest link is missing); None before the first checkpoint."""
    latest = Path(folder) / LATEST_CHECKPOINT
    if latest.is_file():
        return latest
    epochs = epoch_checkpoints(folder)
    return epochs[-1] if epochs else None


def action_dir(results_dir: str | os.PathLike, action: str) -> Path:
    """`<results_dir>/<action>`: where an action writes unless its section says otherwise (a
    service job's results_dir is its job folder)."""
    return Path(results_dir) / action


def default_onnx_file(results_dir: str | os.PathLike) -> Path:
    """`<results_dir>/export/reid_model.onnx`."""
    return action_dir(results_dir, "export") / ONNX_FILE


def job_file(action: str, name: str) -> str:
    """An action's output inside a results folder, as the service's download API names it:
    `train/metrics.jsonl`."""
    return f"{action}/{name}"
