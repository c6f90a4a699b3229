"""The experiment spec: TAO-compatible YAML sections as pydantic models, overrides and the schema.

A TAO 5.x/6.x `re_identification` spec loads unchanged. Keys that only the TAO Swin-transformer
variant reads are accepted (so those specs load) but have no effect here; changing one from its
default logs a warning. Every error names the key path, what was expected and, for unknown keys, the
closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
import reprlib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from reidnet.contracts import (
    Backbone,
    LastStride,
    MetricLossType,
    Neck,
    NeckFeat,
    Network,
    PretrainChoice,
    Sampler,
    action_dir,
)
from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)

ACTIONS = ("train", "evaluate", "inference", "export")


# Bounds of the size-like integers. They keep a typo or a hostile value (input_height 10**6,
# num_epochs 10**12) from reaching torch as an allocation of gigabytes or a job that never ends;
# each is far above any real recipe (TAO trains 256x128 crops, 120 epochs, feat_dim <= 2048).
MAX_INPUT_SIZE = 2048
MAX_FEAT_DIM = 8192
MAX_BATCH = 8192
MAX_WORKERS = 256
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1  # numpy's seeding limit
MAX_COUNT = 10_000_000
MAX_NEIGHBOURS = 1000
MAX_PLOT = 100
MAX_DEVICES = 4096

Epoch = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
DeviceId = Annotated[int, Field(ge=0, le=MAX_DEVICES)]


class _Section(BaseModel):
    # allow_inf_nan=False: every float of every section, list items and dict values included,
    # must be finite. inf and nan (YAML .inf/.nan, JSON's Infinity/NaN, 1e309 overflowing)
    # pass range checks such as gt=0 and train a model to NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """`model`: the network architecture and its initialisation."""

    backbone: Backbone = "resnet_50"
    network: Network = Field(
        "torchvision",
        description="torchvision: torchvision's ResNet (BasicBlock for 18/34, ReLU after the "
        "stem), the network its ImageNet weights were trained as; tao: TAO's exact network (no "
        "stem ReLU, Bottleneck at every depth, projection with a bias). Checkpoints record "
        "theirs; TAO checkpoints are always read as tao.",
    )
    last_stride: LastStride = Field(1, description="Stride of layer4; 1 keeps 16x8 maps.")
    pretrain_choice: PretrainChoice = Field(
        "imagenet",
        description="imagenet: torchvision weights; self: a reidnet checkpoint; none: scratch.",
    )
    pretrained_model_path: str | None = Field(
        None, description="Local weights file for pretrain_choice imagenet or self."
    )
    input_channels: Literal[3] = 3
    input_width: int = Field(128, ge=16, le=MAX_INPUT_SIZE)
    input_height: int = Field(256, ge=16, le=MAX_INPUT_SIZE)
    neck: Neck = "bnneck"
    feat_dim: int = Field(
        256, ge=1, le=MAX_FEAT_DIM, description="Embedding size; a 1x1 projection when not 2048."
    )
    neck_feat: NeckFeat = "after"
    metric_loss_type: MetricLossType = "triplet"
    with_center_loss: bool = False
    with_flip_feature: bool = False
    label_smooth: bool = True
    id_loss_weight: float = Field(1.0, ge=0.0)
    triplet_loss_weight: float = Field(1.0, ge=0.0)
    no_margin: bool = Field(False, description="Soft-margin triplet loss instead of margin 0.3.")
    # Read only by TAO's Swin-transformer ReID; accepted so those specs load.
    pretrain_hw_ratio: float = 2
    id_loss_type: str = "softmax"
    cos_layer: bool = False
    dropout_rate: float = 0.0
    reduce_feat_dim: bool = False
    drop_path: float = 0.1
    drop_out: float = 0.0
    att_drop_rate: float = 0.0
    stride_size: list[int] = Field(default_factory=lambda: [16, 16])
    gem_pooling: bool = False
    stem_conv: bool = False
    jpm: bool = False
    shift_num: int = 5
    shuffle_group: int = 2
    devide_length: int = 4
    re_arrange: bool = True
    sie_coe: float = 3.0
    sie_camera: bool = False
    sie_view: bool = False
    semantic_weight: float = 1.0


class TrainFolder(_Section):
    """One training folder, tagged with its source and the identity namespace it belongs to."""

    path: str
    source: Literal["real", "synthetic"] = "real"
    identity_group: str | None = Field(
        None,
        description="Folders with the same group share person ids; by default each folder "
        "has its own ids, so pid 5 of two folders are two identities.",
    )


class DatasetConfig(_Section):
    """`dataset`: data locations, batching and augmentation."""

    train_dataset_dir: list[TrainFolder] | None = Field(
        None,
        description="One folder, or a list of folders and {path, source, identity_group} entries.",
    )
    test_dataset_dir: str | None = None
    query_dataset_dir: str | None = None
    num_classes: int = Field(
        751,
        ge=1,
        le=MAX_COUNT,
        description="Ignored: reidnet counts identities from the data (a differing value is "
        "reported when training starts).",
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=MAX_BATCH,
        description="The global batch, as in TAO: under torchrun each of N processes trains on "
        "batch_size / N of it (whole identities).",
    )
    val_batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    num_workers: int = Field(
        8, ge=0, le=MAX_WORKERS, description="Data loader workers (capped at CPU count)."
    )
    pixel_mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    pixel_std: list[float] = Field(default_factory=lambda: [0.226, 0.226, 0.226])
    padding: int = Field(10, ge=0, le=MAX_INPUT_SIZE)
    prob: float = Field(0.5, ge=0.0, le=1.0, description="Horizontal flip probability.")
    re_prob: float = Field(0.5, ge=0.0, le=1.0, description="Random erasing probability.")
    sampler: Sampler = "softmax_triplet"
    num_instances: int = Field(4, ge=1, le=MAX_BATCH)

    @field_validator("train_dataset_dir", mode="before")
    @classmethod
    def _folders_as_entries(cls, value: Any) -> Any:
        """A plain string (TAO's form) or a string inside the list is a real-data folder."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        if value is not None:
            raise ValueError(
                "dataset.train_dataset_dir must be a folder path or a list of folder paths "
                f"and {{path, source, identity_group}} entries, got {shown(value)}"
            )
        return value

    def train_folders(self) -> list[TrainFolder]:
        """The training folders as tagged entries (empty when none is set)."""
        return list(self.train_dataset_dir or [])


class ReRankingConfig(_Section):
    """`re_ranking`: k-reciprocal re-ranking and the evaluation plots."""

    re_ranking: bool = False
    k1: int = Field(20, ge=1, le=MAX_NEIGHBOURS)
    k2: int = Field(6, ge=1, le=MAX_NEIGHBOURS)
    lambda_value: float = Field(0.3, ge=0.0, le=1.0)
    max_rank: int = Field(10, ge=1, le=MAX_PLOT, description="Columns of the sampled-matches plot.")
    num_query: int = Field(10, ge=1, le=MAX_PLOT, description="Rows of the sampled-matches plot.")


class OptimConfig(_Section):
    """`train.optim`: optimizer, schedule and loss hyper-parameters."""

    name: Literal["Adam", "AdamW", "SGD"] = "Adam"
    lr_monitor: str = "val_loss"
    lr_steps: list[Epoch] = Field(default_factory=lambda: [40, 70])
    gamma: float = Field(0.1, gt=0.0)
    bias_lr_factor: float = Field(1.0, ge=0.0)
    weight_decay: float = Field(0.0005, ge=0.0)
    weight_decay_bias: float = Field(0.0005, ge=0.0)
    warmup_factor: float = Field(0.01, ge=0.0, le=1.0)
    warmup_iters: int = Field(10, ge=0, le=MAX_EPOCHS, description="Warm-up length in epochs.")
    warmup_epochs: int = Field(
        20,
        ge=0,
        le=MAX_EPOCHS,
        description="Warm-up length in epochs of the cosine schedule (TAO's).",
    )
    warmup_method: Literal["linear", "constant", "cosine"] = Field(
        "linear",
        description="linear/constant: warm-up over warmup_iters then multistep decay; cosine: "
        "TAO's cosine schedule, linear warm-up over warmup_epochs from 0.01 x base_lr, then "
        "cosine decay towards 0.002 x base_lr at num_epochs.",
    )
    base_lr: float = Field(0.00035, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    center_loss_weight: float = Field(0.0005, ge=0.0)
    center_lr: float = Field(0.5, gt=0.0)
    triplet_loss_margin: float = Field(0.3, ge=0.0)
    large_fc_lr: bool = Field(False, description="Classifier at 2 x base_lr, as TAO does.")
    # Read only by TAO's Swin-transformer ReID; accepted so those specs load.
    cosine_margin: float = 0.5
    cosine_scale: float = 30
    trp_l2: bool = False

    @model_validator(mode="before")
    @classmethod
    def _legacy_steps(cls, data: Any) -> Any:
        """Older TAO specs call `lr_steps` `steps`."""
        if isinstance(data, dict) and "steps" in data:
            data = dict(data)
            steps = data.pop("steps")
            if "lr_steps" in data and data["lr_steps"] != steps:
                raise ValueError(
                    "train.optim.steps and train.optim.lr_steps are both set and differ: "
                    "keep only lr_steps (steps is its legacy name)"
                )
            data["lr_steps"] = steps
        return data


class CuDNNConfig(_Section):
    """`train.cudnn`: cuDNN flags on CUDA (TAO's defaults: benchmark off, deterministic on)."""

    benchmark: bool = Field(
        False, description="Let cuDNN time its algorithms for the fixed input shapes (faster)."
    )
    deterministic: bool = Field(
        True, description="Only deterministic cuDNN algorithms (reproducible, can be slower)."
    )


class TrainConfig(_Section):
    """`train`: the training run."""

    results_dir: str | None = None
    num_gpus: int = Field(1, ge=1, le=MAX_DEVICES)
    gpu_ids: list[DeviceId] = Field(default_factory=lambda: [0])
    num_nodes: int = Field(1, ge=1, le=MAX_DEVICES)
    seed: int = Field(1234, ge=-1, le=MAX_SEED, description="Random seed; -1 leaves runs unseeded.")
    cudnn: CuDNNConfig = Field(default_factory=CuDNNConfig)
    num_epochs: int = Field(120, ge=1, le=MAX_EPOCHS)
    checkpoint_interval: int = Field(10, ge=1, le=MAX_EPOCHS)
    keep_checkpoints: int = Field(
        5,
        ge=0,
        le=MAX_EPOCHS,
        description="How many model_epoch_NNN.pth (the weights) to keep (the newest); 0 keeps "
        "every one. reid_model_latest.pth (the resume state: weights, optimizer, schedule, RNG) "
        "and reid_model_best.pth (best validation mAP, the weights) are kept besides.",
    )
    validation_interval: int = Field(10, ge=1, le=MAX_EPOCHS)
    log_every_n_steps: int = Field(
        50,
        ge=1,
        le=10**9,
        description="A progress log line every N steps when not on a terminal.",
    )
    resume_training_checkpoint_path: str | None = None
    grad_clip: float = Field(0.0, ge=0.0, description="Max gradient norm; 0 disables clipping.")
    amp: bool = Field(True, description="Mixed precision on CUDA (bf16 where supported).")
    data_pipeline: Literal["auto", "dataloader", "gpu"] = Field(
        "auto",
        description="gpu: training images decoded once into a uint8 tensor on the training "
        "device (host memory, copied batch by batch, when they do not fit) and augmented per "
        "sample in batched form there; dataloader: PIL decode and per-image transforms in "
        "DataLoader workers; "
        "auto: gpu on CUDA, dataloader on the CPU (gpu on the CPU runs the same tensor code).",
    )
    gpu_data_memory_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Largest share of the free GPU memory the decoded images may take "
        "(data_pipeline gpu); beyond it they stay in host memory.",
    )
    compile: bool | None = Field(
        None,
        description="torch.compile the training forward; null (auto): on for CUDA, off on the "
        "CPU. If compilation fails, training continues eagerly with a warning.",
    )
    sync_bn: bool = Field(
        True,
        description="Multi-GPU (torchrun) runs: BatchNorm statistics over the global batch "
        "(SyncBatchNorm), as TAO does; false keeps per-process statistics (faster). GPUs only.",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)


class _ModelRunSection(_Section):
    """Keys shared by the actions that run a trained model over query and gallery images."""

    results_dir: str | None = None
    num_gpus: int = Field(1, ge=1, le=MAX_DEVICES)
    gpu_ids: list[DeviceId] = Field(default_factory=lambda: [0])
    gpu_id: DeviceId = 0
    num_nodes: int = Field(1, ge=1, le=MAX_DEVICES)
    checkpoint: str | None = None
    onnx_file: str | None = Field(
        None, description="Run this ONNX model with onnxruntime instead of a checkpoint."
    )
    test_dataset: str | None = None
    query_dataset: str | None = None
    amp: bool = Field(
        False,
        description="Embed under bf16 autocast on CUDA: faster, but embeddings then differ "
        "slightly from the fp32 ones of the CPU and ONNX Runtime. Off: fp32 on every device.",
    )


class EvaluateConfig(_ModelRunSection):
    """`evaluate`: scoring a checkpoint on query/gallery."""

    output_sampled_matches_plot: str | None = None
    output_cmc_curve_plot: str | None = None
    same_camera_filter: bool = Field(
        True,
        description="Drop gallery images of the query's identity seen by the query's camera "
        "(Market-1501 protocol). Set false for single-camera data.",
    )
    ap: Literal["standard", "trapezoid"] = Field(
        "standard", description="standard: mean precision at hits; trapezoid: Market MATLAB AP."
    )


class InferenceConfig(_ModelRunSection):
    """`inference`: embeddings of every query and gallery image."""

    output_file: str | None = None


class ExportConfig(_Section):
    """`export`: ONNX export and the DeepStream / TensorRT files beside it."""

    results_dir: str | None = None
    gpu_id: DeviceId = 0
    checkpoint: str | None = None
    onnx_file: str | None = Field(
        None, description="ONNX file to write (default <results_dir>/export/reid_model.onnx)."
    )
    opset_version: int = Field(
        17, ge=17, le=20, description="ONNX opset; 17 loads in TensorRT 8.6+ (DeepStream 6.3+)."
    )


class WandBConfig(_Section):
    """Accepted for TAO compatibility; reidnet logs to TensorBoard and metrics.jsonl instead."""

    enable: bool = True
    project: str = "TAO Toolkit"
    entity: str | None = ""
    tags: list[str] = Field(default_factory=lambda: ["tao-toolkit"])
    reinit: bool = False
    sync_tensorboard: bool = False
    save_code: bool = False
    name: str = "TAO Toolkit Training"


class ExperimentSpec(_Section):
    """A whole experiment spec: the sections every action reads."""

    results_dir: str | None = None
    encryption_key: str | None = Field(None, description="Accepted, unused: nothing is encrypted.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    re_ranking: ReRankingConfig = Field(default_factory=ReRankingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    wandb: WandBConfig = Field(default_factory=WandBConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> ExperimentSpec:
        problems = []
        data, model = self.dataset, self.model
        if data.sampler != "softmax" and data.batch_size % data.num_instances:
            problems.append(
                f"dataset.batch_size ({data.batch_size}) must be a multiple of "
                f"dataset.num_instances ({data.num_instances}): each batch holds "
                "batch_size // num_instances identities with num_instances images each"
            )
        if model.metric_loss_type in ("center", "triplet_center") and not model.with_center_loss:
            problems.append(
                f"model.metric_loss_type is {model.metric_loss_type!r} but "
                "model.with_center_loss is false: set model.with_center_loss=true or "
                "model.metric_loss_type=triplet"
            )
        if data.sampler == "triplet" and model.metric_loss_type == "center":
            problems.append(
                "dataset.sampler 'triplet' with model.metric_loss_type 'center' leaves neither "
                "an identity nor a triplet loss to train with: use metric_loss_type triplet or "
                "triplet_center, or sampler softmax_triplet"
            )
        if model.backbone == "mobilenet_v2" and model.network == "tao":
            problems.append(
                "model.backbone mobilenet_v2 exists only as model.network torchvision (TAO has "
                "no such network): set model.network to torchvision"
            )
        if len(data.pixel_mean) != 3 or len(data.pixel_std) != 3:
            problems.append("dataset.pixel_mean and dataset.pixel_std need 3 values (R, G, B)")
        elif any(s <= 0 for s in data.pixel_std):
            problems.append(f"dataset.pixel_std values must be positive (got {data.pixel_std})")
        if len(self.train.gpu_ids) != self.train.num_gpus:
            problems.append(
                f"train.gpu_ids has {len(self.train.gpu_ids)} entries but train.num_gpus is "
                f"{self.train.num_gpus}: list one GPU id per GPU"
            )
        if problems:
            raise ValueError("; ".join(problems))
        self._warn_on_ignored_keys()
        return self

    def _warn_on_ignored_keys(self) -> None:
        for key, reason in compat_only_keys_set(self):
            logger.warning("%s is accepted for TAO compatibility but %s", key, reason)

    def action_results_dir(self, action: str) -> Path:
        """Where an action writes: its own `results_dir`, else `<results_dir>/<action>`."""
        own = getattr(getattr(self, action), "results_dir", None)
        if own:
            return Path(own)
        if not self.results_dir:
            raise ReidnetError(
                f"no results directory: set results_dir (or {action}.results_dir) in the spec "
                "or on the command line, e.g. results_dir=/path/to/results"
            )
        return action_dir(self.results_dir, action)


_SWIN_ONLY = "is read only by TAO's transformer ReID variant: it has no effect in reidnet"
_SINGLE_DEVICE = "reidnet evaluates, infers and exports on one device (gpu_id): it has no effect"
# Keys the spec accepts so TAO files load, and that change nothing here: a value other than the
# default is warned about when the spec loads. docs/SPEC.md lists them.
COMPAT_ONLY_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": (
        _SWIN_ONLY,
        (
            "pretrain_hw_ratio",
            "id_loss_type",
            "cos_layer",
            "dropout_rate",
            "reduce_feat_dim",
            "drop_path",
            "drop_out",
            "att_drop_rate",
            "stride_size",
            "gem_pooling",
            "stem_conv",
            "jpm",
            "shift_num",
            "shuffle_group",
            "devide_length",
            "re_arrange",
            "sie_coe",
            "sie_camera",
            "sie_view",
            "semantic_weight",
        ),
    ),
    "train.optim": (_SWIN_ONLY, ("cosine_margin", "cosine_scale", "trp_l2")),
    "evaluate": (_SINGLE_DEVICE, ("num_gpus", "gpu_ids", "num_nodes")),
    "inference": (_SINGLE_DEVICE, ("num_gpus", "gpu_ids", "num_nodes")),
    "export": ("export runs on the CPU: it has no effect", ("gpu_id",)),
    "": (
        "reidnet never encrypts checkpoints and cannot decrypt TAO's: it has no effect",
        ("encryption_key",),
    ),
}


def compat_only_keys_set(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """(dotted key, why it does nothing) for each compatibility-only key set to a non-default."""
    found = []
    for path, (reason, names) in COMPAT_ONLY_KEYS.items():
        section = spec
        for part in filter(None, path.split(".")):
            section = getattr(section, part)
        fields = type(section).model_fields
        for name in names:
            if getattr(section, name) != fields[name].get_default(call_default_factory=True):
                found.append((f"{path}.{name}" if path else name, reason))
    if "wandb" in spec.model_fields_set and spec.wandb.enable:
        found.append(("wandb", "reidnet logs to TensorBoard and metrics.jsonl, not to W&B"))
    if spec.train.optim.lr_monitor != "val_loss":
        found.append(("train.optim.lr_monitor", "no schedule in reidnet reads a monitored metric"))
    return found


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages


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
        _resolve_relative_paths(raw, Path(path).resolve().parent)
    if data is not None:
        raw = deep_merge(raw, data)
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(raw, key, value, source)
    return validate_spec(raw, source)


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


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
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


def validate_spec(raw: dict[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a nested dict as an ExperimentSpec, translating pydantic errors for people."""
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        lines = [_explain(e) for e in error.errors(include_url=False)]
        message = f"{source}: invalid spec\n" + "\n".join(f"  - {m}" for m in lines)
        raise ReidnetError(message) from None


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


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
    _resolve_relative_paths(data, Path.cwd())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


MAX_YAML_NODES = 100_000  # a whole TAO spec is a few hundred nodes


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose aliases expand past MAX_YAML_NODES.

    PyYAML shares the node an alias points to, so a 257-byte "billion laughs" document loads
    quickly, but every later walk (validation, deep copies, printing it in an error) expands
    it. Counting the expanded size on the node graph, with each node's size computed once,
    costs one pass over the distinct nodes.
    """

    def construct_document(self, node):
        _check_expanded_size(node)
        return super().construct_document(node)


def _check_expanded_size(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                break
            continue
        if id(node) in on_path:
            raise ReidnetError("the YAML document refers to itself (a recursive alias)")
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise ReidnetError("the YAML document refers to itself (a recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    if max(sizes.values(), default=0) > MAX_YAML_NODES:
        raise ReidnetError(
            f"the YAML document expands to more than {MAX_YAML_NODES} values through its "
            "aliases (*name): a spec is a few hundred; write the values out instead"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def safe_load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing alias bombs and recursive aliases (ReidnetError)."""
    return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass


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


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ReidnetError(f"override {key}: {prefix} is a value, not a section, in {source}")
        node = child
    node[parts[-1]] = value


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


def shown(value: Any, limit: int = 120) -> str:
    """`repr(value)` cut to `limit` characters: error messages never echo a huge value whole."""
    # reprlib bounds the depth and width of containers (a 500-deep spec would overflow repr)
    text = repr(value) if isinstance(value, (str, bytes)) else _SHORT_REPR.repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60
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


def shown_key(key: str, limit: int = 120) -> str:
    """A (user-chosen) key name cut to `limit` characters."""
    return key if len(key) <= limit else f"{key[:limit]}... ({len(key)} characters)"


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
