"""The parts of a training run, declared in one dataclass and built in one order by one function.

`build_parts` checks the launch and the data, then builds, in this order: the training set
(identities first keyed by a resumed checkpoint), the model, the losses, the optimizers and the
schedule, the evaluation records, and last the module the step calls (DDP, compiled or eager).
Nothing else creates run state; resuming (`reidnet.training.resume`) only loads into these parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import Architecture
from reidnet.data.market import ImageRecord, TrainSet, build_train_set, read_records
from reidnet.datatools.validate import validate_dataset
from reidnet.errors import ReidnetError
from reidnet.losses import ReidLoss
from reidnet.model import ReIdentificationNet
from reidnet.model.tao import adopt_pretrained_architecture
from reidnet.training.distributed import DistributedContext
from reidnet.training.optim import EpochSchedule, build_optimizer
from reidnet.training.step import compiled_or_eager, warm_up
from reidnet.utils.randomness import seed_everything

logger = logging.getLogger("reidnet.training.trainer")


@dataclass
class RunParts:
    """Everything one training step and one validation use."""

    spec: ExperimentSpec  # with the architecture adopted from a `self` checkpoint
    device: torch.device
    dist: DistributedContext
    pipeline: str  # "gpu" or "dataloader"
    train_set: TrainSet
    model: ReIdentificationNet  # the plain module: evaluation and checkpoints use it
    criterion: ReidLoss
    optimizer: torch.optim.Optimizer
    center_optimizer: torch.optim.Optimizer | None
    schedule: EpochSchedule
    scaler: torch.amp.GradScaler
    query_records: list[ImageRecord]
    gallery_records: list[ImageRecord]
    forward: torch.nn.Module | None = None  # what the step calls: DDP / compiled / the model


def build_parts(
    spec: ExperimentSpec,
    device: torch.device,
    dist: DistributedContext,
    identity_keys: tuple[str, ...] | list[str] = (),
) -> RunParts:
    """The run's parts in their one order; `identity_keys` are a resumed checkpoint's."""
    check_launch(spec, device, dist)
    if device.type == "cuda":
        apply_cuda_settings(spec)
    check_data(spec)
    if spec.train.seed >= 0:
        seed_everything(spec.train.seed)  # reproducible initial weights
    if spec.model.pretrain_choice == "self":
        adopted = adopt_pretrained_architecture(spec.model, spec.model.pretrained_model_path)
        spec = spec.model_copy(update={"model": adopted})
    train_set = build_train_set(spec.dataset.train_folders(), identity_keys)
    model = build_model(spec, train_set.num_classes, device, dist)
    criterion = build_criterion(spec, train_set.num_classes).to(device)
    optim = spec.train.optim
    center_optimizer = None
    if criterion.center_loss is not None:
        center_optimizer = torch.optim.SGD(criterion.center_loss.parameters(), lr=optim.center_lr)
    use_fp16 = device.type == "cuda" and spec.train.amp and not torch.cuda.is_bf16_supported()
    query, gallery = eval_records(spec)
    return RunParts(
        spec=spec,
        device=device,
        dist=dist,
        pipeline=resolve_pipeline(spec, device),
        train_set=train_set,
        model=model,
        criterion=criterion,
        optimizer=build_optimizer(model, optim, fused=device.type == "cuda"),
        center_optimizer=center_optimizer,
        schedule=EpochSchedule(optim, spec.train.num_epochs),
        scaler=torch.amp.GradScaler("cuda", enabled=use_fp16),
        query_records=query,
        gallery_records=gallery,
    )


def training_forward(parts: RunParts) -> torch.nn.Module:
    """The module the step calls: the model, compiled when `train.compile` is on (and compiling
    works here), wrapped in DDP under torchrun. Call after the weights are final (resume)."""
    spec, device, model = parts.spec, parts.device, parts.model
    compile_on = spec.train.compile
    if compile_on is None:
        compile_on = device.type == "cuda"
    forward: torch.nn.Module = model
    per_rank = spec.dataset.batch_size // parts.dist.world_size
    shape = (per_rank, 3, spec.model.input_height, spec.model.input_width)
    if compile_on:
        forward = compiled_or_eager(model, shape, device, spec.train.amp)
    elif device.type == "cuda":
        warm_up(model, model, shape, device, spec.train.amp)  # the step's memory, before data
    if not parts.dist.enabled:
        return forward
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Only a model with no identity loss leaves parameters (the classifier) unused.
        find_unused_parameters=parts.criterion.id_loss is None,
        gradient_as_bucket_view=True,
    )
    # Compiling DDP itself lets the compiler split the graph at DDP's gradient buckets.
    return torch.compile(wrapped, dynamic=False) if forward is not model else wrapped


def apply_cuda_settings(spec: ExperimentSpec) -> None:
    """The spec's cuDNN flags, as TAO applies them (benchmark pays off for fixed shapes), and
    TF32 matmuls for the network (the triplet distances stay in float64: losses.py)."""
    torch.backends.cudnn.benchmark = spec.train.cudnn.benchmark
    torch.backends.cudnn.deterministic = spec.train.cudnn.deterministic
    torch.set_float32_matmul_precision("high")


def check_launch(spec: ExperimentSpec, device: torch.device, dist: DistributedContext) -> None:
    train = spec.train
    if train.num_gpus > 1 and not dist.enabled:
        logger.warning(
            "train.num_gpus is %d but this process was not started by torchrun: training "
            "on %s alone. Use `reidnet train` (it launches torchrun when num_gpus > 1) or "
            "`torchrun --nproc_per_node %d -m reidnet train -e SPEC`",
            train.num_gpus,
            device,
            train.num_gpus,
        )
    batch = spec.dataset.batch_size
    if dist.enabled and batch % dist.world_size:
        raise ReidnetError(
            f"dataset.batch_size {batch} is the global batch and {dist.world_size} "
            f"processes cannot split it evenly: use a multiple of {dist.world_size}"
        )
    if dist.enabled and dist.is_main:
        logger.info(
            "distributed training: %d processes (%d per node), %s backend; "
            "dataset.batch_size %d is the global batch, %d per process",
            dist.world_size,
            dist.local_world_size,
            "nccl" if device.type == "cuda" else "gloo",
            batch,
            batch // dist.world_size,
        )


def resolve_pipeline(spec: ExperimentSpec, device: torch.device) -> str:
    choice = spec.train.data_pipeline
    if choice == "auto":
        return "gpu" if device.type == "cuda" else "dataloader"
    return choice


def check_data(spec: ExperimentSpec) -> None:
    """Refuse a dataset that cannot train (with the validator's findings); log its warnings."""
    data = spec.dataset
    report = validate_dataset(
        data.train_folders(),
        data.test_dataset_dir,
        data.query_dataset_dir,
        num_instances=data.num_instances,
        batch_size=data.batch_size if data.sampler != "softmax" else None,
        same_camera_filter=spec.evaluate.same_camera_filter,
    )
    for finding in report.findings:
        if finding.severity == "warning":
            logger.warning("dataset: %s", finding.message)
    if not report.ok:
        problems = "\n".join(f"  - {f.code}: {f.message}" for f in report.errors)
        raise ReidnetError(
            "the dataset cannot be used for training (run `reidnet dataset validate` for the "
            f"full report):\n{problems}"
        )


def build_model(
    spec: ExperimentSpec, num_classes: int, device: torch.device, dist: DistributedContext
) -> ReIdentificationNet:
    stated = spec.dataset.num_classes
    if "num_classes" in spec.dataset.model_fields_set and stated != num_classes:
        logger.warning(
            "dataset.num_classes is %d but the training data has %d identities: "
            "the classifier gets %d outputs (reidnet counts them, TAO needs them set by hand)",
            stated,
            num_classes,
            num_classes,
        )
    net = ReIdentificationNet.from_architecture(
        Architecture.from_spec(spec),
        num_classes,
        pretrain_choice=spec.model.pretrain_choice,
        pretrained_model_path=spec.model.pretrained_model_path,
    ).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    if spec.train.sync_bn and dist.enabled:  # one process: its BatchNorm sees the whole batch
        if device.type != "cuda":
            logger.info("train.sync_bn needs GPUs (SyncBatchNorm has no CPU kernel): not used")
        else:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def build_criterion(spec: ExperimentSpec, num_classes: int) -> ReidLoss:
    model, optim = spec.model, spec.train.optim
    return ReidLoss(
        num_classes,
        model.feat_dim,
        metric_loss_type=model.metric_loss_type,
        sampler=spec.dataset.sampler,
        label_smooth=model.label_smooth,
        triplet_margin=None if model.no_margin else optim.triplet_loss_margin,
        with_center_loss=model.with_center_loss,
        center_loss_weight=optim.center_loss_weight,
        id_loss_weight=model.id_loss_weight,
        triplet_loss_weight=model.triplet_loss_weight,
    )


def eval_records(spec: ExperimentSpec) -> tuple[list[ImageRecord], list[ImageRecord]]:
    data = spec.dataset
    if not (data.query_dataset_dir and data.test_dataset_dir):
        logger.info("no query/gallery folders in the spec: training runs without validation")
        return [], []
    return read_records(data.query_dataset_dir), read_records(data.test_dataset_dir)


def state_summary(parts: RunParts) -> dict[str, Any]:
    """What reid_model_latest.pth stores of the parts' trainable state, for a resume."""
    state: dict[str, Any] = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
    }
    if parts.criterion.center_loss is not None:
        state["center_loss"] = parts.criterion.center_loss.state_dict()
        state["center_optimizer"] = parts.center_optimizer.state_dict()
    return state
