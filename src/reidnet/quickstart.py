"""The one-command tour: synthetic data -> untrained score -> train -> evaluate -> embeddings.

Everything it makes lies under one folder, and the summary lists every path.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from reidnet.config import ExperimentSpec, load_spec
from reidnet.contracts import BEST_CHECKPOINT

logger = logging.getLogger(__name__)

SYNTH_ARGS = {"identities": 120, "test_identities": 40, "cameras": 4, "images_per_identity": 12}


@dataclass
class QuickstartSummary:
    out_dir: Path
    untrained: dict[str, Any]
    trained: dict[str, Any]
    seconds: dict[str, float]
    paths: dict[str, Path] = field(default_factory=dict)
    next_command: str = ""  # a command to run next, exactly as printed, from the same folder


def quickstart_spec(out_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentSpec:
    """The packaged quick-start spec with every path moved under `out_dir`."""
    text = resources.files("reidnet.resources").joinpath("quickstart.yaml").read_text()
    raw = yaml.safe_load(text)
    data = out_dir / "data"
    raw["results_dir"] = str(out_dir / "results")
    raw["dataset"].update(
        train_dataset_dir=str(data / "bounding_box_train"),
        test_dataset_dir=str(data / "bounding_box_test"),
        query_dataset_dir=str(data / "query"),
    )
    return load_spec(data=raw, overrides=overrides)


def run_quickstart(
    out_dir: str | Path = "quickstart_out",
    overrides: list[str] | tuple[str, ...] = (),
    device: str | None = None,
) -> QuickstartSummary:
    from reidnet.actions import evaluate, inference
    from reidnet.contracts import LATEST_CHECKPOINT, METRICS_FILE, Architecture
    from reidnet.data.market import read_records
    from reidnet.datatools.synthetic import generate_synthetic_dataset
    from reidnet.evaluation.plots import TRAINING_CURVES_FILE
    from reidnet.runtime.record import SPEC_NAME, log_name
    from reidnet.runtime.retrieval import score_model
    from reidnet.training.trainer import TrainingRun
    from reidnet.utils.devices import resolve_device

    out_dir = Path(out_dir)
    spec = quickstart_spec(out_dir, overrides)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    data_dir = out_dir / "data"
    if (data_dir / "query").is_dir():
        logger.info("reusing the synthetic dataset in %s", data_dir)
    else:
        logger.info("generating a synthetic dataset in %s", data_dir)
        generate_synthetic_dataset(data_dir, seed=0, **SYNTH_ARGS)
    seconds["data"] = time.perf_counter() - clock
    results = Path(spec.results_dir)
    if results.exists():  # a second tour in one folder starts from an untrained model again
        logger.info("removing the previous quick-start run in %s (the dataset is kept)", results)
        shutil.rmtree(results)

    clock = time.perf_counter()
    run = TrainingRun(spec, device)
    query = read_records(spec.dataset.query_dataset_dir)
    gallery = read_records(spec.dataset.test_dataset_dir)
    untrained = score_model(
        run.model, Architecture.from_spec(spec), query, gallery, spec, resolve_device(device)
    ).metrics
    seconds["untrained evaluation"] = time.perf_counter() - clock

    clock = time.perf_counter()
    try:
        result = run.fit()
    finally:
        run.close()
    seconds["training"] = time.perf_counter() - clock
    # A tour never resumes (the next one starts from an untrained model), so the resume state,
    # three times the weights with Adam's moments, is not kept.
    (result.results_dir / LATEST_CHECKPOINT).unlink(missing_ok=True)

    clock = time.perf_counter()
    spec.evaluate.checkpoint = str(result.last_checkpoint)
    spec.inference.checkpoint = str(result.last_checkpoint)
    evaluation = evaluate(spec, device)
    embeddings = inference(spec, device)
    seconds["evaluation + inference"] = time.perf_counter() - clock
    train_dir, evaluate_dir = result.results_dir, evaluation.results_file.parent
    paths = {
        "dataset": data_dir,
        "checkpoint (final epoch)": result.last_checkpoint,
        "checkpoint (best validation mAP)": train_dir / BEST_CHECKPOINT,
        "training curves": train_dir / TRAINING_CURVES_FILE,
        "metrics (per epoch)": train_dir / METRICS_FILE,
        "tensorboard": train_dir / "tensorboard",
        "training log": train_dir / log_name("train"),
        "training spec (resolved)": train_dir / SPEC_NAME,
        "evaluation results": evaluation.results_file,
        **{name.replace("_", " ") + " plot": path for name, path in evaluation.plots.items()},
        "evaluation log": evaluate_dir / log_name("evaluate"),
        "embeddings (json)": embeddings.json_file,
        "embeddings (npy)": embeddings.npy_file,
        "embeddings index (csv)": embeddings.index_file,
    }
    return QuickstartSummary(
        out_dir, untrained, evaluation.metrics, seconds, paths, next_command(out_dir, train_dir)
    )


def next_command(out_dir: Path, train_dir: Path) -> str:
    """Score the best checkpoint again with k-reciprocal re-ranking, from the run's own record
    (its resolved spec), into a folder of its own so the tour's results stay as they are."""
    from reidnet.runtime.record import SPEC_NAME

    words = [
        "reidnet",
        "evaluate",
        "-e",
        str(train_dir / SPEC_NAME),
        f"evaluate.checkpoint={train_dir / BEST_CHECKPOINT}",
        "re_ranking.re_ranking=true",
        f"results_dir={out_dir / 're_ranked'}",
    ]
    return shlex.join(words)
