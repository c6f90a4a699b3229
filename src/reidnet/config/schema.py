"""The experiment spec's schema: TAO-compatible YAML sections as pydantic models.

A TAO 5.x/6.x `re_identification` spec loads unchanged. Keys that only the TAO Swin-transformer
variant reads are accepted (so those specs load) but have no effect here; changing one from its
default logs a warning. Size-like integers are bounded and every float must be finite.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reidnet.config.compat import COMPAT_ONLY_KEYS
from reidnet.config.display import shown
from reidnet.contracts import ACTIONS as ACTIONS  # the spec's action sections, by name
from reidnet.contracts import (
    PIXEL_MEAN,
    PIXEL_STD,
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

# The package's name, not this module's: the spec's warnings have always come from reidnet.config.
logger = logging.getLogger("reidnet.config")


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
    pixel_mean: list[float] = Field(default_factory=lambda: list(PIXEL_MEAN))
    pixel_std: list[float] = Field(default_factory=lambda: list(PIXEL_STD))
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
