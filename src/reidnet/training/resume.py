"""Checkpoints of a training run: writing them (epoch, latest, best, pruning), finding the one to
resume from, and loading it back into the run's parts, growing the classifier (and the center
loss) when the training data gained identities since.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import (
    ARCHITECTURE_FIELDS,
    BEST_CHECKPOINT,
    LATEST_CHECKPOINT,
    Architecture,
    checkpoint_header,
    epoch_checkpoint_name,
    epoch_checkpoints,
    latest_checkpoint,
)
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt
from reidnet.training.parts import RunParts, state_summary
from reidnet.utils.atomic import atomic_link, atomic_torch_save
from reidnet.utils.randomness import capture_rng_state, restore_rng_state

logger = logging.getLogger("reidnet.training.trainer")


@dataclass
class Position:
    """Where a run stands: epochs done, steps done into the next one, and its epoch records."""

    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def resume_source(spec: ExperimentSpec, results_dir: Path) -> Path | None:
    """The checkpoint to resume from: the spec's, else the results folder's latest."""
    explicit = spec.train.resume_training_checkpoint_path
    return Path(explicit) if explicit else latest_checkpoint(results_dir)


def load(path: Path | None) -> dict[str, Any] | None:
    return ckpt.load_checkpoint(path, "train.resume_training_checkpoint_path") if path else None


def restore(
    parts: RunParts, previous: dict[str, Any], path: Path, architecture: Architecture
) -> Position:
    """Load a checkpoint's state into `parts`; the position the run continues from."""
    train = parts.spec.train  # a finished run in results_dir, not a file named to resume from
    finished = not train.resume_training_checkpoint_path and previous["epoch"] >= train.num_epochs
    if "optimizer" not in previous and not finished:
        raise ReidnetError(weights_only_message(path))
    trained = Architecture.from_checkpoint(previous, path).network_fields()
    stated = architecture.network_fields()
    for key in ARCHITECTURE_FIELDS:
        if trained[key] != stated[key]:
            raise ReidnetError(
                f"cannot resume from {path}: it was trained with model.{key}="
                f"{trained[key]!r}, the spec says {stated[key]!r}. "
                "Use a fresh results_dir to start a new run, or pretrain_choice self to "
                "fine-tune from it."
            )
    parts.model.load_state_dict(
        grown(previous["model"], parts.model.state_dict(), "classifier.weight")
    )
    if "optimizer" not in previous:
        # A finished run whose resume state was not kept (the quick start's): nothing is left
        # to train, so the weights-only final checkpoint is all the run needs to say so.
        return Position(previous["epoch"], 0, list(previous.get("history", [])))
    parts.optimizer.load_state_dict(previous["optimizer"])
    pad_optimizer_state(parts.optimizer)
    center_loss = parts.criterion.center_loss
    if center_loss is not None and previous.get("center_loss"):
        center_loss.load_state_dict(
            grown(previous["center_loss"], center_loss.state_dict(), "centers")
        )
        parts.center_optimizer.load_state_dict(previous["center_optimizer"])
        pad_optimizer_state(parts.center_optimizer)
    if previous.get("scaler"):
        parts.scaler.load_state_dict(previous["scaler"])
    restore_rng_state(previous["rng"])
    position = Position(
        previous["epoch"], previous.get("step_in_epoch", 0), list(previous.get("history", []))
    )
    logger.info(
        "resuming from %s: %d epoch(s) done%s",
        path,
        position.epoch,
        f", {position.step_in_epoch} step(s) into epoch {position.epoch + 1}"
        if position.step_in_epoch
        else "",
    )
    old_classes, new_classes = previous["num_classes"], parts.train_set.num_classes
    if new_classes > old_classes:
        logger.info(
            "the training data gained %d identities (%d -> %d): the classifier grows, the "
            "%d existing identities keep their rows",
            new_classes - old_classes,
            old_classes,
            new_classes,
            old_classes,
        )
    return position


def weights_only_message(path: Path) -> str:
    """Why a file without the optimizer state cannot be resumed, and the two ways on."""
    return (
        f"cannot resume from {path}: it holds the weights only (no optimizer, schedule or "
        "random state), as model_epoch_NNN.pth, reid_model_best.pth and TAO files do; resume "
        f"from the run's {LATEST_CHECKPOINT}, or fine-tune from it in a fresh results_dir with "
        f"model.pretrain_choice=self model.pretrained_model_path={path}"
    )


def grown(saved: dict, current: dict, key: str) -> dict:
    """`saved` with the rows of `key` extended to the current shape (new identities); the new
    rows keep the current (freshly initialised) values."""
    saved = dict(saved)
    old, new = saved[key], current[key]
    if old.shape[0] < new.shape[0]:
        rows = new.detach().clone().to(old.dtype)
        rows[: old.shape[0]] = old
        saved[key] = rows
    elif old.shape[0] > new.shape[0]:
        raise ReidnetError(
            f"the checkpoint knows {old.shape[0]} identities but the training data now has "
            f"{new.shape[0]}: resuming needs every earlier training folder; start a new run "
            "(fresh results_dir) with pretrain_choice self to fine-tune on the new data alone"
        )
    return saved


def pad_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Zero-pad per-parameter optimizer state (Adam moments) of parameters that grew."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for name, value in state.items():
                if torch.is_tensor(value) and value.dim() and value.shape != parameter.shape:
                    padded = torch.zeros_like(parameter, dtype=value.dtype)
                    padded[: value.shape[0]] = value
                    state[name] = padded


class Checkpoints:
    """Writes a run's checkpoints (rank 0 only; every rank gets the paths)."""

    def __init__(self, parts: RunParts, results_dir: Path, architecture: Architecture):
        self.parts, self.results_dir, self.architecture = parts, results_dir, architecture
        self.latest = results_dir / LATEST_CHECKPOINT
        self.best = results_dir / BEST_CHECKPOINT

    def save(self, epoch: int, history: list, step_in_epoch: int = 0) -> Path:
        """After a checkpoint epoch, model_epoch_NNN.pth (the weights) and reid_model_latest.pth
        (everything a resume needs); mid-epoch, latest alone. The path of the file written for
        the user: the epoch checkpoint, or latest mid-epoch."""
        if step_in_epoch:
            self._save_resume_state(epoch, history, step_in_epoch)
            return self.latest
        path = self.results_dir / epoch_checkpoint_name(epoch)
        self.save_weights(epoch, history, path, f"the epoch-{epoch} checkpoint")
        self._save_resume_state(epoch, history, 0)
        if self.parts.dist.is_main:
            logger.info("checkpoint %s", path)
        return path

    def save_weights(self, epoch: int, history: list, path: Path, what: str) -> None:
        """What evaluate, inference, export and a fine-tune read: the header, the weights and
        the epoch records. The optimizer state is left out: Adam's two moments alone are twice
        the weights."""
        if self.parts.dist.is_main:
            payload = {**self._header(epoch), "model": self.parts.model.state_dict()}
            atomic_torch_save({**payload, "history": history}, path, what)

    def _save_resume_state(self, epoch: int, history: list, step_in_epoch: int) -> None:
        if not self.parts.dist.is_main:
            return
        payload = {**self._header(epoch), **state_summary(self.parts)}
        payload.update(
            scheduler={"epoch": epoch},
            rng=capture_rng_state(),
            history=history,
            step_in_epoch=step_in_epoch,
        )
        what = f"the epoch-{epoch} resume checkpoint"
        if step_in_epoch:
            what = f"the resume checkpoint at epoch {epoch + 1}, step {step_in_epoch}"
        atomic_torch_save(payload, self.latest, what)

    def _header(self, epoch: int) -> dict[str, Any]:
        return checkpoint_header(
            epoch=epoch,
            spec_dict=self.parts.spec.model_dump(mode="json"),
            identity_keys=self.parts.train_set.identity_keys,
            architecture=self.architecture,
        )

    def prune(self) -> None:
        """Keep the newest `train.keep_checkpoints` epoch checkpoints (0: all of them)."""
        keep = self.parts.spec.train.keep_checkpoints
        if not keep or not self.parts.dist.is_main:
            return
        saved = epoch_checkpoints(self.results_dir)
        for old in saved[:-keep]:
            old.unlink(missing_ok=True)
            logger.debug("removed %s (train.keep_checkpoints %d)", old, keep)

    def keep_best(self, epoch: int, history: list, checkpoint: Path | None) -> None:
        """reid_model_best.pth: the checkpoint with the best validation mAP so far (the last
        record of `history` is this epoch's)."""
        if not self.parts.dist.is_main:
            return
        metrics = history[-1]["validation"]
        best = [h["validation"]["mAP"] for h in history[:-1] if h.get("validation")]
        if best and metrics["mAP"] <= max(best):
            return
        if checkpoint is None or checkpoint.name != epoch_checkpoint_name(epoch):
            self.save_weights(epoch, history, self.best, f"the epoch-{epoch} best checkpoint")
        else:
            atomic_link(checkpoint, self.best)
        logger.info("best validation mAP %.4f at epoch %d: %s", metrics["mAP"], epoch, self.best)


def interrupted_message(stop_signal: int, epoch: int, steps: int, path: Path) -> str:
    name = signal.Signals(stop_signal).name
    return (
        f"{name} received: training stopped at epoch {epoch + 1}, step {steps}; checkpoint "
        f"{path} written. Run the same command again to resume."
    )
