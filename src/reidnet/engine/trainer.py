"""Training and fine-tuning: the strong-baseline recipe, resumable, observable, interruptible.

One `TrainingRun` owns the data, model, losses, optimizers and schedule of a spec. Each epoch's
randomness (sampling order, augmentation) is seeded from (seed, epoch), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have on the CPU.

Batches come from one of two sources and the loop is the same for both: the gpu pipeline (images
decoded once, held on the device, augmented there in batched form) or a DataLoader of per-image
transforms. On CUDA the step runs under bf16 autocast, channels_last, a fused optimizer and
torch.compile, and nothing in the loop waits on the GPU: losses add up on the device and are read
once per epoch (and every few steps for a progress bar on a terminal). Under torchrun the model
is wrapped in DDP, each rank takes its own share of the epoch's P x K batches, and rank 0 alone
writes checkpoints, metrics, logs and status.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidnet.config import ExperimentSpec
from reidnet.contracts import (
    ARCHITECTURE_FIELDS,
    BEST_CHECKPOINT,
    LATEST_CHECKPOINT,
    METRICS_FILE,
    STATUS_FILE,
    Architecture,
    TrainingStatus,
    epoch_checkpoint_name,
    epoch_checkpoints,
)
from reidnet.data import gpu
from reidnet.data.dataset import ImageDataset
from reidnet.data.market import ImageRecord, build_train_set, read_records
from reidnet.data.sampler import RandomIdentitySampler
from reidnet.data.transforms import build_train_transform
from reidnet.data.validate import validate_dataset
from reidnet.engine import checkpoint as ckpt
from reidnet.engine import distributed
from reidnet.engine.embed import autocast_for, extract_features, loader_workers
from reidnet.engine.optim import EpochSchedule, build_optimizer
from reidnet.engine.retrieval import score_retrieval
from reidnet.errors import ReidnetError
from reidnet.losses import ReidLoss
from reidnet.model import ReIdentificationNet
from reidnet.model.tao import adopt_pretrained_architecture

logger = logging.getLogger(__name__)

# Steps between reads of the loss for a terminal's progress bar (each read waits for the GPU),
# and between the ranks' agreements on a stop request under torchrun.
PROGRESS_EVERY = 20
STOP_CHECK_EVERY = 10
# On CUDA validation embeds at least this many images per forward: eval keeps no activations
# for a backward pass, so large batches cost little memory and keep the GPU busy.
CUDA_EVAL_BATCH = 512


class TrainingInterrupted(ReidnetError):
    """SIGINT or SIGTERM arrived: a checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainResult:
    results_dir: Path
    last_checkpoint: Path | None
    epochs_completed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    already_complete: bool = False  # a re-run of a finished run: nothing was trained

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        validated = [h["validation"] for h in self.history if h.get("validation")]
        return validated[-1] if validated else None


def train(spec: ExperimentSpec, device: str | torch.device | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) the model a spec describes; see `TrainingRun`.

    Under torchrun every process calls this; the process group is joined when the run is built
    and left at the end.
    """
    run = TrainingRun(spec, device)
    try:
        return run.fit()
    finally:
        run.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingRun:
    """Everything a training run needs, built from the spec; `fit()` runs the epochs."""

    def __init__(self, spec: ExperimentSpec, device: str | torch.device | None = None):
        self.spec = spec
        self.results_dir = spec.action_results_dir("train")
        self.dist = distributed.torchrun_context()
        self.device = distributed.process_device(self.dist, spec.train.gpu_ids, device)
        self._started_process_group = distributed.start(self.dist, self.device)
        self._check_launch()
        if self.device.type == "cuda":
            # The spec's cuDNN flags, as TAO applies them (benchmark pays off for fixed shapes).
            torch.backends.cudnn.benchmark = spec.train.cudnn.benchmark
            torch.backends.cudnn.deterministic = spec.train.cudnn.deterministic
            torch.set_float32_matmul_precision("high")
        self.pipeline = self._resolve_pipeline()
        self._train_images: gpu.DecodedImages | None = None
        self._eval_images: gpu.DecodedImages | None = None
        self.stop_signal: int | None = None
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.skip_steps = 0, 0
        self._check_data()
        if spec.train.seed >= 0:
            seed_everything(spec.train.seed)  # reproducible initial weights
        resume_from = self._find_resume_checkpoint()
        previous = (
            ckpt.load_checkpoint(resume_from, "train.resume_training_checkpoint_path")
            if resume_from
            else None
        )
        self.train_set = build_train_set(
            spec.dataset.train_folders(), previous["identity_keys"] if previous else ()
        )
        self._build_model_and_losses()
        self._build_optimizers()
        self.query_records, self.gallery_records = self._eval_records()
        if previous is not None:
            self._restore(previous, resume_from)
        self._prepare_training_forward()

    def close(self) -> None:
        """Leave the process group if this run joined it (torchrun)."""
        if self._started_process_group:
            distributed.stop()
            self._started_process_group = False

    # -- construction ------------------------------------------------------------------------

    def _check_launch(self) -> None:
        train = self.spec.train
        if train.num_gpus > 1 and not self.dist.enabled:
            logger.warning(
                "train.num_gpus is %d but this process was not started by torchrun: training "
                "on %s alone. Use `reidnet train` (it launches torchrun when num_gpus > 1) or "
                "`torchrun --nproc_per_node %d -m reidnet train -e SPEC`",
                train.num_gpus,
                self.device,
                train.num_gpus,
            )
        batch = self.spec.dataset.batch_size
        if self.dist.enabled and batch % self.dist.world_size:
            raise ReidnetError(
                f"dataset.batch_size {batch} is the global batch and {self.dist.world_size} "
                f"processes cannot split it evenly: use a multiple of {self.dist.world_size}"
            )
        if self.dist.enabled and self.dist.is_main:
            logger.info(
                "distributed training: %d processes (%d per node), %s backend; "
                "dataset.batch_size %d is the global batch, %d per process",
                self.dist.world_size,
                self.dist.local_world_size,
                "nccl" if self.device.type == "cuda" else "gloo",
                self.spec.dataset.batch_size,
                self.spec.dataset.batch_size // self.dist.world_size,
            )

    def _resolve_pipeline(self) -> str:
        choice = self.spec.train.data_pipeline
        if choice == "auto":
            return "gpu" if self.device.type == "cuda" else "dataloader"
        return choice

    def _check_data(self) -> None:
        data = self.spec.dataset
        report = validate_dataset(
            data.train_folders(),
            data.test_dataset_dir,
            data.query_dataset_dir,
            num_instances=data.num_instances,
            batch_size=data.batch_size if data.sampler != "softmax" else None,
            same_camera_filter=self.spec.evaluate.same_camera_filter,
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

    def _find_resume_checkpoint(self) -> Path | None:
        explicit = self.spec.train.resume_training_checkpoint_path
        if explicit:
            return Path(explicit)
        latest = self.results_dir / LATEST_CHECKPOINT
        return latest if latest.is_file() else None

    def _build_model_and_losses(self) -> None:
        if self.spec.model.pretrain_choice == "self":
            adopted = adopt_pretrained_architecture(
                self.spec.model, self.spec.model.pretrained_model_path
            )
            self.spec = self.spec.model_copy(update={"model": adopted})
        spec, num_classes = self.spec, self.train_set.num_classes
        stated = spec.dataset.num_classes
        if "num_classes" in spec.dataset.model_fields_set and stated != num_classes:
            logger.warning(
                "dataset.num_classes is %d but the training data has %d identities: "
                "the classifier gets %d outputs (reidnet counts them, TAO needs them set by hand)",
                stated,
                num_classes,
                num_classes,
            )
        model = spec.model
        self.model = ReIdentificationNet(
            model.backbone,
            num_classes=num_classes,
            last_stride=model.last_stride,
            feat_dim=model.feat_dim,
            neck=model.neck,
            neck_feat=model.neck_feat,
            with_flip_feature=model.with_flip_feature,
            pretrain_choice=model.pretrain_choice,
            pretrained_model_path=model.pretrained_model_path,
            network=model.network,
        ).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self._convert_sync_bn()
        optim = spec.train.optim
        self.criterion = ReidLoss(
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
        ).to(self.device)

    def _convert_sync_bn(self) -> None:
        if not self.spec.train.sync_bn or not self.dist.enabled:
            return  # one process: its BatchNorm already sees the whole batch
        if self.device.type != "cuda":
            logger.info("train.sync_bn needs GPUs (SyncBatchNorm has no CPU kernel): not used")
        else:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

    def _prepare_training_forward(self) -> None:
        """DDP under torchrun, then torch.compile when on (`_step` falls back to eager if the
        first compiled step fails). `self.model` stays the plain module: evaluation and
        checkpoints use it."""
        model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Without an identity loss the classifier gets no gradient.
                find_unused_parameters=self.criterion.id_loss is None,
                gradient_as_bucket_view=True,
            )
        self.eager_forward = self.train_forward = model
        self._compiled_step_done = False
        compile_on = self.spec.train.compile
        if compile_on is None:
            compile_on = self.device.type == "cuda"
        if compile_on:
            self.train_forward = torch.compile(model, dynamic=False)
        self._stop_group = distributed.control_group(self.device) if self.dist.enabled else None

    def _build_optimizers(self) -> None:
        optim = self.spec.train.optim
        fused = self.device.type == "cuda"
        self.optimizer = build_optimizer(self.model, optim, fused=fused)
        self.center_optimizer = None
        if self.criterion.center_loss is not None:
            self.center_optimizer = torch.optim.SGD(
                self.criterion.center_loss.parameters(), lr=optim.center_lr
            )
        self.schedule = EpochSchedule(optim, self.spec.train.num_epochs)
        use_fp16 = (
            self.device.type == "cuda"
            and self.spec.train.amp
            and not torch.cuda.is_bf16_supported()
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)

    def _eval_records(self) -> tuple[list[ImageRecord], list[ImageRecord]]:
        data = self.spec.dataset
        if not (data.query_dataset_dir and data.test_dataset_dir):
            logger.info("no query/gallery folders in the spec: training runs without validation")
            return [], []
        return read_records(data.query_dataset_dir), read_records(data.test_dataset_dir)

    def _restore(self, previous: dict[str, Any], path: Path) -> None:
        trained = Architecture.from_checkpoint(previous, path).network_fields()
        stated = Architecture.from_spec(self.spec).network_fields()
        for key in ARCHITECTURE_FIELDS:
            if trained[key] != stated[key]:
                raise ReidnetError(
                    f"cannot resume from {path}: it was trained with model.{key}="
                    f"{trained[key]!r}, the spec says {stated[key]!r}. "
                    "Use a fresh results_dir to start a new run, or pretrain_choice self to "
                    "fine-tune from it."
                )
        old_classes, new_classes = previous["num_classes"], self.train_set.num_classes
        model_state = _grown(previous["model"], self.model.state_dict(), "classifier.weight")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(previous["optimizer"])
        _pad_optimizer_state(self.optimizer)
        if self.criterion.center_loss is not None and previous.get("center_loss"):
            center_state = _grown(
                previous["center_loss"], self.criterion.center_loss.state_dict(), "centers"
            )
            self.criterion.center_loss.load_state_dict(center_state)
            self.center_optimizer.load_state_dict(previous["center_optimizer"])
            _pad_optimizer_state(self.center_optimizer)
        if previous.get("scaler"):
            self.scaler.load_state_dict(previous["scaler"])
        ckpt.restore_rng_state(previous["rng"])
        self.history = list(previous.get("history", []))
        self.start_epoch = previous["epoch"]
        self.skip_steps = previous.get("step_in_epoch", 0)
        logger.info(
            "resuming from %s: %d epoch(s) done%s",
            path,
            self.start_epoch,
            f", {self.skip_steps} step(s) into epoch {self.start_epoch + 1}"
            if self.skip_steps
            else "",
        )
        if new_classes > old_classes:
            logger.info(
                "the training data gained %d identities (%d -> %d): the classifier grows, the "
                "%d existing identities keep their rows",
                new_classes - old_classes,
                old_classes,
                new_classes,
                old_classes,
            )

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Run the remaining epochs, with the run's record (resolved spec, train.log,
        environment) in the results folder."""
        from reidnet.engine.record import run_record

        with run_record(self.spec, "train", self.device, enabled=self.dist.is_main):
            return self._fit()

    def _fit(self) -> TrainResult:
        spec = self.spec.train
        if self.start_epoch >= spec.num_epochs:
            latest = self._existing_latest()
            logger.info(
                "training is already complete: %d of %d epochs in %s (checkpoint %s); raise "
                "train.num_epochs to train further, or use another results_dir",
                self.start_epoch,
                spec.num_epochs,
                self.results_dir,
                latest,
            )
            return TrainResult(
                self.results_dir, latest, self.start_epoch, self.history, already_complete=True
            )
        if self.dist.is_main:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            self._log_start()
        last_checkpoint = None
        board = _tensorboard(self.results_dir) if self.dist.is_main else nullcontext()
        with _stop_on_signals(self), board as writer:
            self.writer = writer
            for epoch in range(self.start_epoch, spec.num_epochs):
                record, completed = self.run_epoch(epoch)
                if not completed:
                    last_checkpoint = self._save(epoch, step_in_epoch=record["steps"])
                    self._write_status("interrupted", epoch, record, last_checkpoint)
                    self._raise_interrupted(epoch, record["steps"], last_checkpoint)
                number = epoch + 1
                if self.query_records and (
                    number % spec.validation_interval == 0 or number == spec.num_epochs
                ):
                    record["validation"] = self.validate()
                self.history.append(record)
                self._log_epoch(record)
                if number % spec.checkpoint_interval == 0 or number == spec.num_epochs:
                    last_checkpoint = self._save(number)
                    self._prune_checkpoints()
                if "validation" in record:
                    self._keep_best(number, record["validation"], last_checkpoint)
                self._write_status(
                    "running" if number < spec.num_epochs else "done",
                    number,
                    record,
                    last_checkpoint,
                )
        self._plot_curves()
        return TrainResult(
            self.results_dir,
            last_checkpoint or self._existing_latest(),
            spec.num_epochs,
            self.history,
        )

    def _plot_curves(self) -> None:
        """training_curves.png (losses, lr, validation mAP per epoch) beside metrics.jsonl."""
        if not self.dist.is_main:
            return
        from reidnet.evaluation.plots import plot_training_curves

        try:
            logger.info("training curves: %s", plot_training_curves(self.results_dir))
        except ReidnetError as error:  # a damaged metrics.jsonl must not fail a finished run
            logger.warning("no training curves: %s", error)

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """One epoch (what `fit` repeats; benchmarks time it): its record, and whether it ran to
        the end (no stop signal)."""
        self.model.train()
        lr = self.schedule.apply(self.optimizer, epoch + 1)
        self._seed_epoch(epoch)
        batches = self._epoch_batches(epoch)
        skip, self.skip_steps = self.skip_steps, 0
        source = self._batch_source(batches, skip)
        totals: dict[str, torch.Tensor] = {}
        images_seen, start = 0, time.perf_counter()
        step = skip
        with self._progress(epoch, len(batches), skip) as advance:
            for images, labels in source:
                terms = self._step(images, labels)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0) + value.detach()
                step += 1
                images_seen += labels.numel() * self.dist.world_size
                advance(step, terms, lr, images_seen / max(time.perf_counter() - start, 1e-9))
                if self._stop_requested(step, len(batches)):
                    break
        means = self._epoch_means(totals, max(1, step - skip))  # waits for the GPU
        elapsed = time.perf_counter() - start
        record = {
            "epoch": epoch + 1,
            "steps": step,
            "lr": lr,
            "images_per_second": images_seen / max(elapsed, 1e-9),
            "seconds": elapsed,
            **{f"loss_{k}" if k != "accuracy" else "train_accuracy": v for k, v in means.items()},
        }
        return record, step == len(batches)

    def _seed_epoch(self, epoch: int) -> None:
        seed = self.spec.train.seed
        if seed < 0:
            return
        epoch_seed = seed * 1009 + epoch
        if self.dist.rank:  # the other ranks draw their own augmentations
            sequence = np.random.SeedSequence([epoch_seed, self.dist.rank])
            epoch_seed = int(sequence.generate_state(1)[0])
        seed_everything(epoch_seed)

    def _epoch_means(self, totals: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
        """Per-step means of the summed terms, averaged over the ranks: one read from the GPU."""
        if not totals:
            return {}
        names = list(totals)
        means = torch.stack([totals[name].float() for name in names]) / steps
        if self.dist.enabled:
            distributed.average_(means)
        return dict(zip(names, means.tolist(), strict=True))

    def _stop_requested(self, step: int, total: int) -> bool:
        """A stop signal arrived. Under torchrun the ranks agree every few steps and at the end
        of the epoch, so all leave at the same step and no collective is left waiting."""
        if not self.dist.enabled:
            return self.stop_signal is not None
        if step % STOP_CHECK_EVERY and step != total:
            return False
        if distributed.any_rank(self.stop_signal is not None, self._stop_group):
            self.stop_signal = self.stop_signal or signal.SIGTERM
            return True
        return False

    def _batch_source(self, batches: list[list[int]], skip: int):
        """The epoch's (images, labels) batches from step `skip` on."""
        if self.pipeline != "gpu":
            return self._loader(batches[skip:])
        # Drawn from the epoch-seeded generator: a resumed run augments each step as before.
        augment_seed = int(torch.randint(0, 2**62, ()).item())
        return gpu.DeviceBatches(
            self._train_store(), self._train_labels, batches, self._augment, augment_seed, skip
        )

    def _train_store(self) -> gpu.DecodedImages:
        """The decoded training images, decoded at the first epoch of the gpu pipeline."""
        if self._train_images is None:
            data, model = self.spec.dataset, self.spec.model
            self._train_images = gpu.load_decoded(
                [r.path for r in self.train_set.records],
                model.input_height,
                model.input_width,
                self.device,
                memory_share=self.spec.train.gpu_data_memory_share,
                workers=_decode_threads(),
                verbose=self.dist.is_main,
            )
            self._train_labels = torch.tensor(self.train_set.labels).to(self.device)
            self._augment = gpu.BatchAugment(
                model.input_height,
                model.input_width,
                data.pixel_mean,
                data.pixel_std,
                flip_prob=data.prob,
                padding=data.padding,
                re_prob=data.re_prob,
            )
        return self._train_images

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        data = self.spec.dataset
        labels = self.train_set.labels
        world, rank = self.dist.world_size, self.dist.rank
        if data.sampler == "softmax":
            # The same order on every rank (each takes its own share), whatever their seeds.
            shuffle = torch.Generator().manual_seed(max(self.spec.train.seed, 0) * 1009 + epoch)
            order = torch.randperm(len(labels), generator=shuffle).tolist()
            size = data.batch_size  # the global batch, as in TAO; each rank takes a slice
            batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
            part = len(batches[0] if batches else order) // world
            return [b[rank * part : (rank + 1) * part] for b in batches or [order]]
        sampler = RandomIdentitySampler(
            labels,
            data.batch_size,
            data.num_instances,
            seed=max(self.spec.train.seed, 0),
            num_replicas=world,
            rank=rank,
        )
        sampler.set_epoch(epoch)
        return sampler.batches()

    def _loader(self, batches: list[list[int]]) -> DataLoader:
        data, model = self.spec.dataset, self.spec.model
        transform = build_train_transform(
            model.input_height,
            model.input_width,
            data.pixel_mean,
            data.pixel_std,
            flip_prob=data.prob,
            padding=data.padding,
            re_prob=data.re_prob,
        )
        dataset = ImageDataset(
            [r.path for r in self.train_set.records], transform, self.train_set.labels
        )
        workers = loader_workers(data.num_workers)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker if workers else None,
            generator=torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item())),
        )

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        cls_score, terms = self._forward_backward(images, labels)
        if self.spec.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.train.grad_clip)
        self.scaler.step(self.optimizer)
        if self.center_optimizer is not None:
            self.scaler.unscale_(self.center_optimizer)
            centers = list(self.criterion.center_loss.parameters())
            if self.dist.enabled:  # DDP averages the model's gradients, not these
                distributed.average_gradients(centers)
            # The center loss enters the total scaled by its weight; its centers learn with
            # center_lr on the unweighted gradient, as in the strong baseline.
            for parameter in centers:
                parameter.grad.mul_(1.0 / self.spec.train.optim.center_loss_weight)
            self.scaler.step(self.center_optimizer)
        self.scaler.update()
        terms["accuracy"] = (cls_score.detach().argmax(1) == labels).float().mean()
        return terms

    def _forward_backward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss terms and gradients of one batch; the first compiled step falls back to eager
        on any compilation error (no compiler, unsupported backend...)."""
        if self.train_forward is self.eager_forward or self._compiled_step_done:
            return self._losses_and_gradients(self.train_forward, images, labels)
        try:
            result = self._losses_and_gradients(self.train_forward, images, labels)
        except Exception as error:
            logger.warning(
                "torch.compile failed (%s: %s); training continues without compilation "
                "(train.compile=false skips the attempt)",
                type(error).__name__,
                str(error).strip().splitlines()[0] if str(error).strip() else "",
            )
            self.train_forward = self.eager_forward
            return self._losses_and_gradients(self.train_forward, images, labels)
        self._compiled_step_done = True
        return result

    def _losses_and_gradients(self, forward, images, labels):
        with autocast_for(self.device, self.spec.train.amp):
            cls_score, global_feat = forward(images)
            terms = self.criterion(cls_score.float(), global_feat.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        return cls_score, terms

    def validate(self) -> dict[str, Any]:
        """Retrieval metrics on the spec's query/gallery with the current weights.

        Under torchrun every rank embeds its share of the images and rank 0 scores them all;
        every rank returns the metrics.
        """
        if self.dist.enabled:
            distributed.broadcast_buffers(self.model)  # every rank embeds with rank 0's BN stats
        records = self.query_records + self.gallery_records
        positions = distributed.shard(len(records), self.dist)
        features = self._eval_features([records[i].path for i in positions])
        if self.dist.enabled:
            features = distributed.gather_shards(features, len(records), self.dist, self.device)
        metrics = None
        if self.dist.is_main:
            count = len(self.query_records)
            score = score_retrieval(
                features[:count],
                features[count:],
                self.query_records,
                self.gallery_records,
                self.spec,
            )
            metrics = score.metrics
        if self.dist.enabled:
            metrics = distributed.broadcast_object(metrics, self.dist)
        return metrics

    def _eval_features(self, paths: list[Path]) -> torch.Tensor:
        """Eval embeddings of `paths`: decoded once and kept (gpu pipeline) or read each time."""
        model, data = self.spec.model, self.spec.dataset
        batch_size = data.val_batch_size
        if self.device.type == "cuda":
            batch_size = max(batch_size, CUDA_EVAL_BATCH)
        if self.pipeline == "gpu":
            if self._eval_images is None:
                self._eval_images = gpu.load_decoded(
                    paths,
                    model.input_height,
                    model.input_width,
                    self.device,
                    memory_share=self.spec.train.gpu_data_memory_share,
                    workers=_decode_threads(),
                    what="query and gallery images",
                    verbose=self.dist.is_main,
                )
            return gpu.embed_decoded(
                self.model,
                self._eval_images,
                gpu.Normalize(data.pixel_mean, data.pixel_std),
                batch_size,
                lambda: autocast_for(self.device, self.spec.train.amp),
            )
        return extract_features(
            self.model,
            paths,
            height=model.input_height,
            width=model.input_width,
            pixel_mean=data.pixel_mean,
            pixel_std=data.pixel_std,
            batch_size=batch_size,
            num_workers=data.num_workers,
            device=self.device,
            amp=self.spec.train.amp,
        )

    # -- checkpoints, logs, status -----------------------------------------------------------

    def _save(self, epoch: int, step_in_epoch: int = 0, path: Path | None = None) -> Path:
        """Write a checkpoint (rank 0 only); every rank returns its path. With `path`, write
        only that file (the best checkpoint between checkpoint epochs)."""
        latest = self.results_dir / LATEST_CHECKPOINT
        target = path
        if path is None:
            path = latest if step_in_epoch else self.results_dir / epoch_checkpoint_name(epoch)
        if not self.dist.is_main:
            return path
        payload = ckpt.checkpoint_header(
            epoch=epoch,
            spec_dict=self.spec.model_dump(mode="json"),
            identity_keys=self.train_set.identity_keys,
            architecture=Architecture.from_spec(self.spec),
        )
        payload.update(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler={"epoch": epoch},
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            rng=ckpt.capture_rng_state(),
            history=self.history,
            step_in_epoch=step_in_epoch,
        )
        if self.criterion.center_loss is not None:
            payload["center_loss"] = self.criterion.center_loss.state_dict()
            payload["center_optimizer"] = self.center_optimizer.state_dict()
        if step_in_epoch:
            return ckpt.atomic_torch_save(payload, latest)
        if target is not None:
            return ckpt.atomic_torch_save(payload, target)
        ckpt.atomic_torch_save(payload, path)
        ckpt.atomic_link(path, latest)
        logger.info("checkpoint %s", path)
        return path

    def _prune_checkpoints(self) -> None:
        """Keep the newest `train.keep_checkpoints` epoch checkpoints (0: all of them)."""
        keep = self.spec.train.keep_checkpoints
        if not keep or not self.dist.is_main:
            return
        saved = epoch_checkpoints(self.results_dir)
        for old in saved[:-keep]:
            old.unlink(missing_ok=True)
            logger.debug("removed %s (train.keep_checkpoints %d)", old, keep)

    def _keep_best(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """reid_model_best.pth: the checkpoint with the best validation mAP so far."""
        if not self.dist.is_main:
            return
        best = [h["validation"]["mAP"] for h in self.history[:-1] if h.get("validation")]
        if best and metrics["mAP"] <= max(best):
            return
        target = self.results_dir / BEST_CHECKPOINT
        if checkpoint is None or checkpoint.name != epoch_checkpoint_name(epoch):
            checkpoint = self._save(epoch, step_in_epoch=0, path=target)
        else:
            ckpt.atomic_link(checkpoint, target)
        logger.info("best validation mAP %.4f at epoch %d: %s", metrics["mAP"], epoch, target)

    def _existing_latest(self) -> Path | None:
        latest = self.results_dir / LATEST_CHECKPOINT
        return latest if latest.is_file() else None

    def _raise_interrupted(self, epoch: int, steps: int, path: Path) -> None:
        name = signal.Signals(self.stop_signal).name
        raise TrainingInterrupted(
            f"{name} received: training stopped at epoch {epoch + 1}, step {steps}; checkpoint "
            f"{path} written. Run the same command again to resume.",
            exit_code=128 + self.stop_signal,
        )

    def _log_start(self) -> None:
        data, train_set = self.spec.dataset, self.train_set
        logger.info(
            "training %s (feat_dim %d) on %s: %d images, %d identities, %d epochs from epoch %d, "
            "batch %d (%d ids x %d), %s data pipeline",
            self.spec.model.backbone,
            self.spec.model.feat_dim,
            self.device,
            len(train_set.records),
            train_set.num_classes,
            self.spec.train.num_epochs,
            self.start_epoch + 1,
            data.batch_size,
            data.batch_size // data.num_instances,
            data.num_instances,
            self.pipeline,
        )

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss_"))
        line = (
            f"epoch {record['epoch']}/{self.spec.train.num_epochs} {losses} "
            f"acc={record.get('train_accuracy', 0):.3f} lr={record['lr']:.2e} "
            f"{record['images_per_second']:.1f} img/s"
        )
        if "validation" in record:
            v = record["validation"]
            line += f" | mAP={v['mAP']:.4f} rank-1={v['rank-1']:.4f}"
        logger.info(line)
        with open(self.results_dir / METRICS_FILE, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(f"train/{key}", value, record["epoch"])
            for key, value in record.get("validation", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"val/{key}", value, record["epoch"])
            self.writer.flush()

    def _write_status(self, state: str, epoch: int, record: dict, checkpoint: Path | None):
        if not self.dist.is_main:
            return
        status = TrainingStatus.after_epoch(
            state,
            epoch,
            self.spec.train.num_epochs,
            record,
            self.final_validation(),
            checkpoint,
        )
        ckpt.atomic_write_text(self.results_dir / STATUS_FILE, status.to_json())

    def final_validation(self) -> dict[str, Any] | None:
        validated = [h["validation"] for h in self.history if h.get("validation")]
        return validated[-1] if validated else None

    @contextmanager
    def _progress(self, epoch: int, total_steps: int, done: int):
        """A rich progress bar on a terminal; off one (a file, a job log), a log line every
        `train.log_every_n_steps` steps."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if not self.dist.is_main:
            yield lambda *args: None
            return
        if not console.is_terminal:
            every, started = self.spec.train.log_every_n_steps, time.perf_counter()

            def log_step(step, terms, lr, rate):
                if step % every and step != total_steps:
                    return
                elapsed = time.perf_counter() - started
                left = elapsed / max(step - done, 1) * (total_steps - step)
                logger.info(
                    "epoch %d/%d step %d/%d loss %.4f lr %.2e %.1f img/s, epoch ends in %.0f s",
                    epoch + 1,
                    self.spec.train.num_epochs,
                    step,
                    total_steps,
                    terms["total"].detach().item(),
                    lr,
                    rate,
                    left,
                )

            yield log_step
            return
        progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.spec.train.num_epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        task = progress.add_task("train", total=total_steps, completed=done, info="")

        def advance(step, terms, lr, rate):
            if step % PROGRESS_EVERY == 0 or step == total_steps:  # reading the loss waits
                info = f"loss {terms['total'].detach().item():.3f} lr {lr:.1e} {rate:.0f} img/s"
                progress.update(task, completed=step, info=info)

        with progress:
            yield advance


def _decode_threads() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _grown(saved: dict, current: dict, key: str) -> dict:
    """`saved` with the rows of `key` extended to the current shape (new identities)."""
    saved = dict(saved)
    old, new = saved[key], current[key]
    if old.shape[0] < new.shape[0]:
        grown = new.detach().clone().to(old.dtype)
        grown[: old.shape[0]] = old
        saved[key] = grown
    elif old.shape[0] > new.shape[0]:
        raise ReidnetError(
            f"the checkpoint knows {old.shape[0]} identities but the training data now has "
            f"{new.shape[0]}: resuming needs every earlier training folder; start a new run "
            "(fresh results_dir) with pretrain_choice self to fine-tune on the new data alone"
        )
    return saved


def _pad_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Zero-pad per-parameter optimizer state (Adam moments) of parameters that grew."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for name, value in state.items():
                if torch.is_tensor(value) and value.dim() and value.shape != parameter.shape:
                    padded = torch.zeros_like(parameter, dtype=value.dtype)
                    padded[: value.shape[0]] = value
                    state[name] = padded


@contextmanager
def _stop_on_signals(run: TrainingRun):
    """SIGINT/SIGTERM ask the loop to stop after the current step and checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, _frame):
        if run.stop_signal is not None:  # a second signal: stop right now
            raise KeyboardInterrupt
        run.stop_signal = signum
        logger.warning(
            "%s received: finishing the current step, then checkpointing",
            signal.Signals(signum).name,
        )

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _tensorboard(results_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed: no TensorBoard events (metrics.jsonl only)")
        yield None
        return
    writer = SummaryWriter(str(results_dir / "tensorboard"))
    try:
        yield writer
    finally:
        writer.close()
