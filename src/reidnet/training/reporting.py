"""What a training run tells the world (rank 0 only): log lines, metrics.jsonl, TensorBoard,
status.json for the service, a progress bar on a terminal, and the training curves at the end."""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from reidnet.contracts import METRICS_FILE, STATUS_FILE, TrainingStatus, losses_of
from reidnet.errors import ReidnetError
from reidnet.training.parts import RunParts
from reidnet.utils.atomic import atomic_write_text, full_disk_reported

logger = logging.getLogger("reidnet.training.trainer")

# Steps between reads of the loss for a terminal's progress bar (each read waits for the GPU).
PROGRESS_EVERY = 20


def final_validation(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of the last validated epoch of `history`, if any."""
    validated = [h["validation"] for h in history if h.get("validation")]
    return validated[-1] if validated else None


class Reporter:
    """Reports one run into its results folder; on ranks other than 0 every method is silent."""

    def __init__(self, parts: RunParts, results_dir: Path):
        self.parts, self.results_dir = parts, results_dir
        self.enabled = parts.dist.is_main
        self.num_epochs = parts.spec.train.num_epochs
        self.writer = None
        self._stack = ExitStack()

    def __enter__(self) -> Reporter:
        if self.enabled:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            self.writer = self._stack.enter_context(_tensorboard(self.results_dir))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.writer = None

    def start(self, start_epoch: int) -> None:
        if not self.enabled:
            return
        parts = self.parts
        data, train_set = parts.spec.dataset, parts.train_set
        logger.info(
            "training %s (feat_dim %d) on %s: %d images, %d identities, %d epochs from epoch %d, "
            "batch %d (%d ids x %d), %s data pipeline",
            parts.spec.model.backbone,
            parts.spec.model.feat_dim,
            parts.device,
            len(train_set.records),
            train_set.num_classes,
            self.num_epochs,
            start_epoch + 1,
            data.batch_size,
            data.batch_size // data.num_instances,
            data.num_instances,
            parts.pipeline,
        )

    def epoch(self, record: dict[str, Any]) -> None:
        """One log line, one metrics.jsonl line and the TensorBoard scalars of an epoch."""
        if not self.enabled:
            return
        losses = " ".join(f"{term}={value:.4f}" for term, value in losses_of(record).items())
        line = (
            f"epoch {record['epoch']}/{self.num_epochs} {losses} "
            f"acc={record.get('train_accuracy', 0):.3f} lr={record['lr']:.2e} "
            f"{record['images_per_second']:.1f} img/s"
        )
        if "validation" in record:
            v = record["validation"]
            line += f" | mAP={v['mAP']:.4f} rank-1={v['rank-1']:.4f}"
        logger.info(line)
        metrics = self.results_dir / METRICS_FILE
        what = f"the epoch-{record['epoch']} metrics"
        with full_disk_reported(what, metrics, atomic=False), open(metrics, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(f"train/{key}", value, record["epoch"])
        for key, value in record.get("validation", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"val/{key}", value, record["epoch"])
        self.writer.flush()

    def status(
        self,
        state: str,
        epoch: int,
        record: dict[str, Any],
        history: list[dict[str, Any]],
        checkpoint: Path | None,
    ) -> None:
        """status.json: what the service shows while the run goes on."""
        if not self.enabled:
            return
        status = TrainingStatus.after_epoch(
            state, epoch, self.num_epochs, record, final_validation(history), checkpoint
        )
        atomic_write_text(self.results_dir / STATUS_FILE, status.to_json())

    def curves(self) -> None:
        """training_curves.png (losses, lr, validation mAP per epoch) beside metrics.jsonl."""
        if not self.enabled:
            return
        from reidnet.evaluation.plots import plot_training_curves

        try:
            logger.info("training curves: %s", plot_training_curves(self.results_dir))
        except ReidnetError as error:  # a damaged metrics.jsonl must not fail a finished run
            logger.warning("no training curves: %s", error)

    @contextmanager
    def progress(self, epoch: int, total_steps: int, done: int):
        """`advance(step, terms, lr, rate)`: a rich progress bar on a terminal; off one (a file,
        a job log), a log line every `train.log_every_n_steps` steps."""
        from rich.console import Console

        if not self.enabled:
            yield lambda *args: None
            return
        console = Console(stderr=True)
        if console.is_terminal:
            with _progress_bar(console, epoch, self.num_epochs, total_steps, done) as advance:
                yield advance
            return
        every, started = self.parts.spec.train.log_every_n_steps, time.perf_counter()

        def log_step(step, terms, lr, rate):
            if step % every and step != total_steps:
                return
            elapsed = time.perf_counter() - started
            left = elapsed / max(step - done, 1) * (total_steps - step)
            logger.info(
                "epoch %d/%d step %d/%d loss %.4f lr %.2e %.1f img/s, epoch ends in %.0f s",
                epoch + 1,
                self.num_epochs,
                step,
                total_steps,
                terms["total"].detach().item(),
                lr,
                rate,
                left,
            )

        yield log_step


@contextmanager
def _progress_bar(console, epoch: int, num_epochs: int, total_steps: int, done: int):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(f"epoch {epoch + 1}/{num_epochs}"),
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
