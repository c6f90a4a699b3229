"""Training and fine-tuning: the strong-baseline recipe, resumable, observable, interruptible.

A `TrainingRun` builds its parts from the spec in one place (`reidnet.training.parts`), loads a
checkpoint into them when it resumes (`reidnet.training.resume`) and repeats `run_epoch`: each
step is `reidnet.training.step.train_step`, read top to bottom. Batches come from
`reidnet.training.batches` (the gpu pipeline or a DataLoader, the same loop for both), validation
from `reidnet.training.validation`, and logs, metrics.jsonl, TensorBoard and status.json from
`reidnet.training.reporting`.

On CUDA the step runs under bf16 autocast, channels_last, a fused optimizer and torch.compile,
and nothing in the loop waits on the GPU: losses add up on the device and are read once per
epoch (and every few steps for a progress bar on a terminal); a non-finite loss stops the run
then, before the epoch is checkpointed (`reidnet.training.divergence`). Under torchrun the model
is wrapped in DDP, each rank takes its own share of the epoch's P x K batches, and rank 0 alone
writes checkpoints, metrics, logs and status.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import Architecture
from reidnet.errors import ReidnetError
from reidnet.training import distributed, resume
from reidnet.training.batches import TrainBatches, epoch_batches, seed_epoch
from reidnet.training.divergence import DivergenceWatch
from reidnet.training.parts import RunParts, build_parts, training_forward
from reidnet.training.reporting import Reporter, final_validation
from reidnet.training.step import train_step
from reidnet.training.validation import Validator

logger = logging.getLogger(__name__)

# Steps between the ranks' agreements on a stop request under torchrun.
STOP_CHECK_EVERY = 10


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
    is_main: bool = True  # this process writes the outputs (rank 0, or no torchrun)

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        return final_validation(self.history)


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


class TrainingRun:
    """A training run built from a spec: `fit()` runs the remaining epochs."""

    def __init__(self, spec: ExperimentSpec, device: str | torch.device | None = None):
        self.results_dir = spec.action_results_dir("train")
        self.dist = distributed.torchrun_context()
        self.device = distributed.process_device(self.dist, spec.train.gpu_ids, device)
        self._started_process_group = distributed.start(self.dist, self.device)
        self.stop_signal: int | None = None
        try:
            source = resume.resume_source(spec, self.results_dir)
            previous = resume.load(source)
            keys = previous["identity_keys"] if previous else ()
            self.parts: RunParts = build_parts(spec, self.device, self.dist, keys)
            architecture = Architecture.from_spec(self.parts.spec)
            self.position = resume.Position()
            if previous is not None:
                self.position = resume.restore(self.parts, previous, source, architecture)
            self.parts.forward = training_forward(self.parts)
        except BaseException:
            self.close()
            raise
        self._stop_group = distributed.control_group(self.device) if self.dist.enabled else None
        self.batches = TrainBatches(
            self.parts.spec,
            self.parts.train_set,
            self.parts.pipeline,
            self.device,
            self.dist,
            self._stop_group,
        )
        self.checkpoints = resume.Checkpoints(self.parts, self.results_dir, architecture)
        self.validate = Validator(self.parts)
        self.divergence = DivergenceWatch(self.parts.spec, self.device, self.dist)

    # The parts users of a run reach for (tests, the quick start, benchmarks).
    spec = property(lambda self: self.parts.spec)
    model = property(lambda self: self.parts.model)
    pipeline = property(lambda self: self.parts.pipeline)
    query_records = property(lambda self: self.parts.query_records)
    gallery_records = property(lambda self: self.parts.gallery_records)
    history = property(lambda self: self.position.history)

    def close(self) -> None:
        """Leave the process group if this run joined it (torchrun)."""
        if self._started_process_group:
            distributed.stop()
            self._started_process_group = False

    def fit(self) -> TrainResult:
        """Run the remaining epochs, with the run's record (resolved spec, train.log,
        environment) in the results folder."""
        from reidnet.runtime.record import run_record

        with run_record(self.spec, "train", self.device, enabled=self.dist.is_main):
            return self._fit()

    def _fit(self) -> TrainResult:
        num_epochs, history = self.spec.train.num_epochs, self.position.history
        if self.position.epoch >= num_epochs:
            latest = resume.latest_checkpoint(self.results_dir)
            logger.info(
                "training is already complete: %d of %d epochs in %s (checkpoint %s); raise "
                "train.num_epochs to train further, or use another results_dir",
                self.position.epoch,
                num_epochs,
                self.results_dir,
                latest,
            )
            return TrainResult(
                self.results_dir,
                latest,
                self.position.epoch,
                history,
                already_complete=True,
                is_main=self.dist.is_main,
            )
        train, last_checkpoint = self.spec.train, None
        with _stop_on_signals(self), Reporter(self.parts, self.results_dir) as report:
            report.start(self.position.epoch)
            for epoch in range(self.position.epoch, num_epochs):
                record, completed = self.run_epoch(epoch, report)
                if not completed:
                    steps = record["steps"]
                    last_checkpoint = self.checkpoints.save(epoch, history, step_in_epoch=steps)
                    report.status("interrupted", epoch, record, history, last_checkpoint)
                    raise TrainingInterrupted(
                        resume.interrupted_message(self.stop_signal, epoch, steps, last_checkpoint),
                        exit_code=128 + self.stop_signal,
                    )
                number = epoch + 1
                if self.query_records and (
                    number % train.validation_interval == 0 or number == num_epochs
                ):
                    record["validation"] = self.validate()
                history.append(record)
                self.position.epoch = number
                report.epoch(record)
                if number % train.checkpoint_interval == 0 or number == num_epochs:
                    last_checkpoint = self.checkpoints.save(number, history)
                    self.checkpoints.prune()
                if "validation" in record:
                    self.checkpoints.keep_best(number, history, last_checkpoint)
                state = "running" if number < num_epochs else "done"
                report.status(state, number, record, history, last_checkpoint)
            report.curves()
        latest = last_checkpoint or resume.latest_checkpoint(self.results_dir)
        return TrainResult(self.results_dir, latest, num_epochs, history, is_main=self.dist.is_main)

    def run_epoch(self, epoch: int, report: Reporter | None = None) -> tuple[dict[str, Any], bool]:
        """One epoch (what `fit` repeats; benchmarks time it): its record, and whether it ran to
        the end (no stop signal)."""
        parts = self.parts
        parts.model.train()
        lr = parts.schedule.apply(parts.optimizer, epoch + 1)
        seed_epoch(self.spec.train.seed, epoch, self.dist.rank)
        batches = epoch_batches(self.spec, parts.train_set.labels, self.dist, epoch)
        skip, self.position.step_in_epoch = self.position.step_in_epoch, 0
        source = self.batches.source(batches, skip)
        totals: dict[str, torch.Tensor] = {}
        images_seen, start, step = 0, time.perf_counter(), skip
        report = report or Reporter(parts, self.results_dir)
        with report.progress(epoch, len(batches), skip) as advance:
            for images, labels in source:
                terms = train_step(parts, images, labels)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0) + value.detach()
                step += 1
                self.divergence.see(step, terms["total"])
                images_seen += labels.numel() * self.dist.world_size
                advance(step, terms, lr, images_seen / max(time.perf_counter() - start, 1e-9))
                if self._stop_requested(step, len(batches)):
                    break
        means = self._epoch_means(totals, max(1, step - skip))  # waits for the GPU
        if means:  # a NaN epoch stops here, before fit (or a stop signal) checkpoints it
            self.divergence.check(epoch, means["total"], lr)
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
