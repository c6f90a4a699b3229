"""Training and fine-tuning: the strong-baseline recipe, resumable, observable, interruptible.

One `TrainingRun` owns the data, model, losses, optimizers and schedule of a spec. Each epoch's
randomness (sampling order, augmentation) is seeded from (seed, epoch), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidnet.config import ExperimentSpec
from reidnet.data.dataset import ImageDataset
from reidnet.data.market import ImageRecord, build_train_set, read_records
from reidnet.data.sampler import RandomIdentitySampler
from reidnet.data.transforms import build_train_transform
from reidnet.data.validate import validate_dataset
from reidnet.engine import checkpoint as ckpt
from reidnet.engine.embed import autocast_for, extract_features, loader_workers, resolve_device
from reidnet.engine.optim import EpochSchedule, build_optimizer
from reidnet.engine.retrieval import score_retrieval
from reidnet.errors import ReidnetError
from reidnet.losses import ReidLoss
from reidnet.model import ReIdentificationNet

logger = logging.getLogger(__name__)


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

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        validated = [h["validation"] for h in self.history if h.get("validation")]
        return validated[-1] if validated else None


def train(spec: ExperimentSpec, device: str | torch.device | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) the model a spec describes; see `TrainingRun`."""
    return TrainingRun(spec, device).fit()


def architecture_of(spec: ExperimentSpec) -> dict[str, Any]:
    model, data = spec.model, spec.dataset
    return {
        "backbone": model.backbone,
        "feat_dim": model.feat_dim,
        "last_stride": model.last_stride,
        "neck": model.neck,
        "neck_feat": model.neck_feat,
        "with_flip_feature": model.with_flip_feature,
        "input_height": model.input_height,
        "input_width": model.input_width,
        "pixel_mean": list(data.pixel_mean),
        "pixel_std": list(data.pixel_std),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingRun:
    """Everything a training run needs, built from the spec; `fit()` runs the epochs."""

    def __init__(self, spec: ExperimentSpec, device: str | torch.device | None = None):
        self.spec = spec
        self.results_dir = spec.action_results_dir("train")
        self.device = resolve_device(device, spec.train.gpu_ids[0])
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

    # -- construction ------------------------------------------------------------------------

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
        latest = self.results_dir / ckpt.LATEST_NAME
        return latest if latest.is_file() else None

    def _build_model_and_losses(self) -> None:
        spec, num_classes = self.spec, self.train_set.num_classes
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
        ).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
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
        architecture = architecture_of(self.spec)
        for key in ckpt.ARCHITECTURE_FIELDS:
            if previous["architecture"][key] != architecture[key]:
                raise ReidnetError(
                    f"cannot resume from {path}: it was trained with model.{key}="
                    f"{previous['architecture'][key]!r}, the spec says {architecture[key]!r}. "
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
        spec = self.spec.train
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._log_start()
        last_checkpoint = None
        with _stop_on_signals(self), _tensorboard(self.results_dir) as writer:
            self.writer = writer
            for epoch in range(self.start_epoch, spec.num_epochs):
                record, completed = self._run_epoch(epoch)
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
                self._write_status(
                    "running" if number < spec.num_epochs else "done",
                    number,
                    record,
                    last_checkpoint,
                )
        return TrainResult(
            self.results_dir,
            last_checkpoint or self._existing_latest(),
            spec.num_epochs,
            self.history,
        )

    def _run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """One epoch; returns its record and whether it ran to the end (no stop signal)."""
        self.model.train()
        lr = self.schedule.apply(self.optimizer, epoch)
        seed = self.spec.train.seed
        if seed >= 0:
            seed_everything(seed * 1009 + epoch)
        batches = self._epoch_batches(epoch)
        skip, self.skip_steps = self.skip_steps, 0
        loader = self._loader(batches[skip:])
        totals: dict[str, torch.Tensor] = {}
        images_seen, start = 0, time.perf_counter()
        step = skip
        with self._progress(epoch, len(batches), skip) as advance:
            for images, labels in loader:
                terms = self._step(images, labels)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0) + value.detach()
                step += 1
                images_seen += labels.numel()
                advance(step, terms, lr, images_seen / max(time.perf_counter() - start, 1e-9))
                if self.stop_signal is not None:
                    break
        elapsed = time.perf_counter() - start
        count = max(1, step - skip)
        record = {
            "epoch": epoch + 1,
            "steps": step,
            "lr": lr,
            "images_per_second": images_seen / max(elapsed, 1e-9),
            "seconds": elapsed,
            **{
                f"loss_{k}" if k != "accuracy" else "train_accuracy": float(v) / count
                for k, v in totals.items()
            },
        }
        return record, step == len(batches)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        data = self.spec.dataset
        labels = self.train_set.labels
        if data.sampler == "softmax":
            order = torch.randperm(len(labels)).tolist()
            size = data.batch_size
            return [order[i : i + size] for i in range(0, len(order) - size + 1, size)] or [order]
        sampler = RandomIdentitySampler(
            labels, data.batch_size, data.num_instances, seed=max(self.spec.train.seed, 0)
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
        with autocast_for(self.device, self.spec.train.amp):
            cls_score, global_feat = self.model(images)
            terms = self.criterion(cls_score.float(), global_feat.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        if self.spec.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.train.grad_clip)
        self.scaler.step(self.optimizer)
        if self.center_optimizer is not None:
            self.scaler.unscale_(self.center_optimizer)
            # The center loss enters the total scaled by its weight; its centers learn with
            # center_lr on the unweighted gradient, as in the strong baseline.
            for parameter in self.criterion.center_loss.parameters():
                parameter.grad.mul_(1.0 / self.spec.train.optim.center_loss_weight)
            self.scaler.step(self.center_optimizer)
        self.scaler.update()
        terms["accuracy"] = (cls_score.detach().argmax(1) == labels).float().mean()
        return terms

    def validate(self) -> dict[str, Any]:
        """Retrieval metrics on the spec's query/gallery with the current weights."""
        model, data = self.spec.model, self.spec.dataset
        paths = [r.path for r in self.query_records + self.gallery_records]
        features = extract_features(
            self.model,
            paths,
            height=model.input_height,
            width=model.input_width,
            pixel_mean=data.pixel_mean,
            pixel_std=data.pixel_std,
            batch_size=data.val_batch_size,
            num_workers=data.num_workers,
            device=self.device,
            amp=self.spec.train.amp,
        )
        count = len(self.query_records)
        score = score_retrieval(
            features[:count], features[count:], self.query_records, self.gallery_records, self.spec
        )
        return score.metrics

    # -- checkpoints, logs, status -----------------------------------------------------------

    def _save(self, epoch: int, step_in_epoch: int = 0) -> Path:
        payload = ckpt.checkpoint_header(
            epoch=epoch,
            spec_dict=self.spec.model_dump(mode="json"),
            identity_keys=self.train_set.identity_keys,
            architecture=architecture_of(self.spec),
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
        latest = self.results_dir / ckpt.LATEST_NAME
        if step_in_epoch:
            return ckpt.atomic_torch_save(payload, latest)
        path = ckpt.atomic_torch_save(payload, self.results_dir / ckpt.epoch_checkpoint_name(epoch))
        _atomic_link(path, latest)
        logger.info("checkpoint %s", path)
        return path

    def _existing_latest(self) -> Path | None:
        latest = self.results_dir / ckpt.LATEST_NAME
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
            "batch %d (%d ids x %d)",
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
        )

    def _log_epoch(self, record: dict[str, Any]) -> None:
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
        with open(self.results_dir / "metrics.jsonl", "a") as stream:
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
        total = self.spec.train.num_epochs
        seconds = record.get("seconds", 0.0)
        status = {
            "state": state,
            "epoch": epoch,
            "num_epochs": total,
            "latest": {k: v for k, v in record.items() if k != "validation"},
            "validation": self.final_validation(),
            "eta_seconds": seconds * max(0, total - epoch),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "updated": time.time(),
        }
        _atomic_write_text(self.results_dir / "status.json", json.dumps(status, indent=2))

    def final_validation(self) -> dict[str, Any] | None:
        validated = [h["validation"] for h in self.history if h.get("validation")]
        return validated[-1] if validated else None

    @contextmanager
    def _progress(self, epoch: int, total_steps: int, done: int):
        """A rich progress bar on a terminal; nothing otherwise (logs carry the epoch lines)."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            yield lambda *args: None
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
            if step % 5 == 0 or step == total_steps:
                info = f"loss {float(terms['total']):.3f} lr {lr:.1e} {rate:.0f} img/s"
                progress.update(task, completed=step, info=info)

        with progress:
            yield advance


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


def _atomic_link(source: Path, target: Path) -> None:
    """Point `target` at `source`'s content atomically (hard link, else a copy)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        import shutil

        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


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
