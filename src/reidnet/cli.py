"""The `reidnet` command line: one command per action, each a thin shell over a library function.

User errors (ReidnetError) print one message without a traceback and exit with status 2.
Heavy modules are imported inside the commands so `reidnet --help` stays fast.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from reidnet.errors import ReidnetError
from reidnet.service.settings import ENV_PREFIX, MIB, ServiceSettings  # `serve`'s defaults


def _console(stderr: bool = False) -> Console:
    """Rich on a terminal; off one (a pipe, a file, a job log) lines are never wrapped."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=1000, no_color=True, highlight=False)


console = _console()
error_console = _console(stderr=True)

VERBOSE_FLAGS = ("-v", "--verbose")


class _ReidnetGroup(TyperGroup):
    """The root command: flags shown without a value type, -v accepted after the subcommand."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        _drop_flag_metavars(self)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        # `reidnet evaluate -v -e spec.yaml` means `reidnet -v evaluate -e spec.yaml`; tokens
        # after `--` are left alone.
        end = args.index("--") if "--" in args else len(args)
        verbose = [arg for arg in args[:end] if arg in VERBOSE_FLAGS]
        rest = [arg for arg in args[:end] if arg not in VERBOSE_FLAGS] + args[end:]
        return super().parse_args(ctx, verbose[:1] + rest)


def _drop_flag_metavars(command) -> None:
    """Flags take no value, so their help shows no `<bool>` (typer prints one by default).

    Also joins the lines of each help paragraph: typer keeps a docstring's line breaks after
    the first paragraph and rich then re-wraps each line, leaving ragged half-empty lines.
    """
    if command.help:
        command.help = _join_paragraph_lines(command.help)
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, help_option]:
        if param is not None and getattr(param, "is_flag", False) and not param.count:
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        _drop_flag_metavars(subcommand)


def _join_paragraph_lines(text: str) -> str:
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph if paragraph.startswith("\b") else " ".join(paragraph.split())
        for paragraph in paragraphs
    )


app = typer.Typer(
    cls=_ReidnetGroup,
    name="reidnet",
    help="Person and object re-identification: data, training, evaluation, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
spec_app = typer.Typer(help="Inspect experiment specs.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="Validate, describe, generate and convert datasets.", no_args_is_help=True
)
app.add_typer(spec_app, name="spec")
app.add_typer(dataset_app, name="dataset")
users_app = typer.Typer(help="Users of the fine-tuning service.", no_args_is_help=True)
app.add_typer(users_app, name="users")

SpecOption = Annotated[
    Path, typer.Option("--experiment-spec", "-e", help="Experiment spec YAML (TAO format).")
]


def _overrides(example: str):
    """The trailing key.sub=value arguments, with an example that fits the command."""
    return Annotated[
        list[str] | None,
        typer.Argument(help=f"Spec overrides key.sub=value, e.g. {example}", show_default=False),
    ]


Overrides = _overrides("train.num_epochs=5")
EvaluateOverrides = _overrides("evaluate.checkpoint=model.pth")
InferenceOverrides = _overrides("inference.checkpoint=model.pth")
ExportOverrides = _overrides("export.checkpoint=model.pth")
ConvertOverrides = _overrides("model.neck_feat=before")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def _configure(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Debug logging from reidnet (other libraries stay at WARNING); also accepted "
            "after the command.",
        ),
    ] = False,
) -> None:
    from reidnet.logs import configure_logging

    configure_logging(verbose)  # third-party loggers stay at WARNING (reidnet.logs)


# ---------------------------------------------------------------------------------------------
# Specs


@app.command("default-specs")
def default_specs(
    results_dir: Annotated[Path, typer.Option(help="results_dir written into the specs.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the YAML files (default RESULTS_DIR/specs).")
    ] = None,
) -> None:
    """Write train/evaluate/inference/export specs holding every key with its default."""
    from reidnet.config import write_default_specs

    for path in write_default_specs(results_dir, out):
        console.print(f"wrote {path}")


@spec_app.command("check")
def spec_check(spec: SpecOption, overrides: Overrides = None) -> None:
    """Print the resolved spec (defaults filled in, overrides applied) or the error."""
    from reidnet.config import dump_spec, load_spec

    print(dump_spec(load_spec(spec, overrides or [])), end="")


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the spec's JSON schema with its defaults."""
    from reidnet.config import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))


# ---------------------------------------------------------------------------------------------
# The four actions, each a shell over its function in reidnet.actions (the service runs these)


@app.command("train")
def train_command(spec: SpecOption, overrides: Overrides = None) -> None:
    """Train or fine-tune from a spec; resumes from results_dir's latest checkpoint.

    With train.num_gpus > 1 on one machine it starts torchrun with one process per GPU; under
    torchrun (`torchrun --nproc_per_node N [--nnodes M ...] -m reidnet train -e SPEC`) every
    process trains its share with DDP and rank 0 writes the outputs.
    """
    from reidnet.actions import torchrun_command, train
    from reidnet.config import load_spec

    loaded = load_spec(spec, overrides or [])
    command = torchrun_command(loaded, sys.argv[1:])
    if command is not None:
        error_console.print(f"launching {loaded.train.num_gpus} processes with torchrun")
        os.execv(command[0], command)
    result = train(loaded)
    if not result.is_main:
        return
    if result.already_complete:
        console.print(
            f"already complete: {result.epochs_completed} epochs in {result.results_dir} "
            f"(checkpoint {result.last_checkpoint}); raise train.num_epochs to train further"
        )
        return
    console.print(f"checkpoint: {result.last_checkpoint}")
    if result.final_metrics:
        _print_metrics(result.final_metrics, "validation")


ForceFlag = Annotated[
    bool, typer.Option("--force", help="Replace the results of an earlier run in the same place.")
]


@app.command("evaluate")
def evaluate_command(
    spec: SpecOption, overrides: EvaluateOverrides = None, force: ForceFlag = False
) -> None:
    """mAP, rank-1/5/10, mINP of evaluate.checkpoint or .onnx_file on query/gallery, plus plots."""
    from reidnet.actions import evaluate
    from reidnet.config import load_spec

    outcome = evaluate(load_spec(spec, overrides or []), force=force)
    _print_metrics(outcome.metrics, "evaluation")
    console.print(f"results: {outcome.results_file}")
    for name, path in outcome.plots.items():
        console.print(f"{name}: {path}")


@app.command("inference")
def inference_command(
    spec: SpecOption,
    overrides: InferenceOverrides = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="Embed every image of this folder instead.")
    ] = None,
    force: ForceFlag = False,
) -> None:
    """Embeddings of every query and gallery image (or of --input) as JSON, .npy and CSV."""
    from reidnet.actions import inference
    from reidnet.config import load_spec

    outcome = inference(load_spec(spec, overrides or []), input_dir=input_dir, force=force)
    console.print(
        f"{outcome.count} embeddings: {outcome.json_file}, {outcome.npy_file}, {outcome.index_file}"
    )


@app.command("export")
def export_command(
    spec: SpecOption,
    overrides: ExportOverrides = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing ONNX file and deployment files.")
    ] = False,
) -> None:
    """ONNX model of export.checkpoint (parity-checked) plus DeepStream and TensorRT files."""
    from reidnet.actions import export
    from reidnet.config import load_spec

    outcome = export(load_spec(spec, overrides or []), force=force)
    lines = [f"parity: {outcome.parity.describe()}", f"onnx: {outcome.onnx_file}"]
    lines += [f"{name}: {path}" for name, path in outcome.deployment_files.items()]
    for line in lines:  # soft-wrapped: paths stay whole for copy and paste
        console.print(line, highlight=False, soft_wrap=True)


@app.command("convert")
def convert_command(
    source: Annotated[
        Path, typer.Argument(help="TAO checkpoint (.pth/.tlt/.ckpt) or TAO-layout ONNX model.")
    ],
    target: Annotated[Path, typer.Argument(help="reidnet checkpoint to write (.pth).")],
    spec: Annotated[
        Path | None,
        typer.Option(
            "--experiment-spec",
            "-e",
            help="Spec giving what the file cannot tell (last_stride, neck_feat, input size "
            "and normalisation of a .pth); TAO's defaults without one.",
        ),
    ] = None,
    overrides: ConvertOverrides = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing target.")] = False,
) -> None:
    """A reidnet checkpoint from a TAO checkpoint or ONNX model: evaluate, fine-tune, export it."""
    from reidnet.config import load_spec
    from reidnet.convert import convert

    written, architecture = convert(source, target, load_spec(spec, overrides or []), force=force)
    described = ", ".join(f"{key} {value}" for key, value in architecture.to_dict().items())
    console.print(f"architecture: {described}", highlight=False, soft_wrap=True)
    console.print(f"checkpoint: {written}", highlight=False, soft_wrap=True)


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option(help="Folder for everything the tour makes.")] = Path(
        "quickstart_out"
    ),
    overrides: Overrides = None,
) -> None:
    """Synthetic data, an untrained baseline, a short training run, evaluation and embeddings."""
    from reidnet.quickstart import run_quickstart

    summary = run_quickstart(out, overrides or [])
    table = Table(title="reidnet quick start: synthetic pedestrians, ResNet-18 from scratch")
    table.add_column("model")
    for column in ("mAP", "rank-1", "rank-5", "rank-10", "mINP"):
        table.add_column(column, justify="right")
    for name, metrics in (("untrained", summary.untrained), ("trained", summary.trained)):
        table.add_row(
            name,
            *(f"{100 * metrics[k]:.2f}" for k in ("mAP", "rank-1", "rank-5", "rank-10", "mINP")),
        )
    console.print(table)
    for step, seconds in summary.seconds.items():
        console.print(f"{step}: {seconds:.1f} s")
    for name, path in summary.paths.items():
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
    console.print(
        "\nnext: the best checkpoint again, re-ranked (k-reciprocal), from the run's own spec:",
        highlight=False,
    )
    console.print(summary.next_command, highlight=False, soft_wrap=True, markup=False)


@app.command("doctor")
def doctor_command(json_output: JsonFlag = False) -> None:
    """Versions, the device and the optional features: what a bug report needs.

    Exits 1 when torch, torchvision or onnxruntime is installed but does not import.
    """
    from reidnet.doctor import report

    found = report()
    if json_output:
        print(json.dumps(found, indent=2))
    else:
        _print_doctor(found)
    if found["problems"]:
        raise typer.Exit(1)


def _print_doctor(found: dict) -> None:
    console.print(f"reidnet {found['reidnet']}, Python {found['python']}, {found['platform']}")
    for name, installed in found["packages"].items():
        problem = found["problems"].get(name)
        state = installed or "not installed"
        line = f"  {name}: {state}" + (f"  BROKEN: {problem}" if problem else "")
        console.print(Text(line), soft_wrap=True)
    device = found["device"]
    if device["device"] == "cuda":
        details = f"CUDA {device['cuda']}: {', '.join(device['gpus'])}"
    elif device["device"] == "cpu":
        details = f"{device['threads']} threads; {device['note']}"
    else:
        details = device["note"]
    console.print(f"device: {device['device'] or 'none'} ({details})", highlight=False)
    console.print("optional features:")
    for feature in found["features"]:  # plain lines: what a bug report pastes
        state = feature["version"] or f"missing ({feature['install']})"
        console.print(Text(f"  {feature['package']}: {state}, for {feature['feature']}"))


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title + (" (re-ranked)" if metrics.get("re_ranking") else ""))
    for column in ("mAP", "rank-1", "rank-5", "rank-10", "mINP", "valid queries", "skipped"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{100 * metrics[k]:.2f}" for k in ("mAP", "rank-1", "rank-5", "rank-10", "mINP")),
        str(metrics["num_valid_queries"]),
        str(metrics["num_skipped_queries"]),
    )
    console.print(table)


@app.command("plot")
def plot_command(
    results_dir: Annotated[
        Path, typer.Argument(help="A training run's results_dir, or its train folder.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="PNG to write (default: training_curves.png beside metrics.jsonl)."),
    ] = None,
) -> None:
    """Training curves (losses, learning rate, validation mAP and rank-1 per epoch) as a PNG."""
    from reidnet.evaluation.plots import plot_training_curves

    console.print(f"training curves: {plot_training_curves(results_dir, out)}", highlight=False)


# ---------------------------------------------------------------------------------------------
# Datasets


def _split_folders(
    roots: list[Path] | None,
    train: list[Path] | None,
    train_synthetic: list[Path] | None,
    test: Path | None,
    query: Path | None,
    spec: Path | None,
) -> tuple[list, Path | None, Path | None]:
    """Training folder entries and test/query folders from roots, explicit options or a spec."""
    from reidnet.config import TrainFolder, load_spec
    from reidnet.data.market import find_split_folders

    train_entries: list = [TrainFolder(path=str(p)) for p in train or []]
    train_entries += [TrainFolder(path=str(p), source="synthetic") for p in train_synthetic or []]
    if spec is not None:
        data = load_spec(spec).dataset
        train_entries += data.train_folders()
        test = test or (Path(data.test_dataset_dir) if data.test_dataset_dir else None)
        query = query or (Path(data.query_dataset_dir) if data.query_dataset_dir else None)
    for root in roots or []:
        found = find_split_folders(root)
        if not found:
            raise ReidnetError(
                f"{root} holds none of bounding_box_train, bounding_box_test, query (or TAO's "
                "sample_train, sample_test, sample_query): pass a dataset root, or flat folders "
                "with --train/--test/--query"
            )
        if "train" in found:
            train_entries.append(TrainFolder(path=str(found["train"])))
        test = test or found.get("test")
        query = query or found.get("query")
    return train_entries, test, query


TrainOption = Annotated[
    list[Path] | None, typer.Option("--train", help="Flat training folder (real data).")
]
TrainSyntheticOption = Annotated[
    list[Path] | None, typer.Option("--train-synthetic", help="Flat training folder (synthetic).")
]
TestOption = Annotated[Path | None, typer.Option("--test", help="Gallery folder.")]
QueryOption = Annotated[Path | None, typer.Option("--query", help="Query folder.")]
OptionalSpec = Annotated[
    Path | None, typer.Option("--experiment-spec", "-e", help="Take the folders from a spec.")
]
Roots = Annotated[
    list[Path] | None,
    typer.Argument(help="Dataset roots holding bounding_box_train/bounding_box_test/query."),
]


@dataset_app.command("validate")
def dataset_validate(
    roots: Roots = None,
    train: TrainOption = None,
    train_synthetic: TrainSyntheticOption = None,
    test: TestOption = None,
    query: QueryOption = None,
    spec: OptionalSpec = None,
    num_instances: Annotated[int, typer.Option(help="Images per identity in a batch.")] = 4,
    batch_size: Annotated[int | None, typer.Option(help="Check one P×K batch fits.")] = None,
    same_camera_filter: Annotated[
        bool,
        typer.Option(
            "--cross-camera/--same-camera",
            help="Count only matches from other cameras (Market-1501), or same-camera ones too "
            "(single-camera data); in a spec: same_camera_filter in section evaluate.",
        ),
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Decode every image and report problems; exit 1 when training or evaluation cannot run."""
    from reidnet.datatools.validate import validate_dataset

    train_entries, test, query = _split_folders(roots, train, train_synthetic, test, query, spec)
    if not train_entries and test is None and query is None:
        raise ReidnetError("nothing to validate: pass a dataset root, --train/--test/--query or -e")
    report = validate_dataset(
        train_entries, test, query, num_instances, batch_size, same_camera_filter
    )
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report) -> None:
    styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for finding in report.findings:
        console.print(
            f"[{styles[finding.severity]}]{finding.severity:7}[/] {finding.code}: "
            f"{finding.message}",
            highlight=False,
        )
        for path in finding.paths[:5]:
            console.print(f"          {path}", highlight=False, markup=False)
    verdict = "[green]OK[/]" if report.ok else "[bold red]NOT USABLE[/]"
    console.print(
        f"{report.images_checked} images decoded; {len(report.errors)} error(s): {verdict}"
    )


@dataset_app.command("stats")
def dataset_stats_command(
    roots: Roots = None,
    train: TrainOption = None,
    train_synthetic: TrainSyntheticOption = None,
    test: TestOption = None,
    query: QueryOption = None,
    spec: OptionalSpec = None,
    as_json: JsonFlag = False,
) -> None:
    """Identities, images and cameras per subset, in total and split into real and synthetic."""
    from reidnet.data.market import dataset_stats

    train_entries, test, query = _split_folders(roots, train, train_synthetic, test, query, spec)
    stats = dataset_stats(train_entries, test, query)
    if as_json:
        print(json.dumps(_stats_as_dict(stats), indent=2))
        return
    _print_stats_table(stats)


def _stats_as_dict(stats: dict) -> dict:
    return {s: {k: c.as_dict() for k, c in v.items()} for s, v in stats.items()}


def _print_stats_table(stats: dict) -> None:
    table = Table(title="Dataset statistics")
    for column in ("subset", "source", "# ids", "# images", "# cameras"):
        table.add_column(column, justify="left" if column in ("subset", "source") else "right")
    for subset, counts in stats.items():
        for source in ("total", "real", "synthetic"):
            c = counts[source]
            name = subset if source == "total" else ""
            table.add_row(
                name,
                source,
                str(c.identities),
                str(c.images),
                str(c.cameras),
                end_section=source == "synthetic",
            )
    console.print(table)


def _parse_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise ReidnetError(f"--size {text!r} must be HEIGHTxWIDTH, e.g. 128x64")
    return int(height), int(width)


@dataset_app.command("synth")
def dataset_synth(
    out: Annotated[Path, typer.Argument(help="Empty folder for the Market-1501-layout dataset.")],
    identities: Annotated[int, typer.Option(help="Identities in total (train + test).")] = 100,
    test_identities: Annotated[
        int | None, typer.Option(help="Identities kept for query/gallery (default half).")
    ] = None,
    cameras: Annotated[int, typer.Option(help="Cameras.")] = 4,
    images_per_identity: Annotated[int, typer.Option(help="Images per identity.")] = 12,
    size: Annotated[str, typer.Option(help="Image size HEIGHTxWIDTH.")] = "128x64",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    workers: Annotated[
        int | None, typer.Option(help="Rendering processes (default: CPU count, at most 4).")
    ] = None,
) -> None:
    """Generate a procedural synthetic pedestrian dataset in Market-1501 layout."""
    import time

    from rich.progress import Progress

    from reidnet.datatools.synthetic import generate_synthetic_dataset

    start = time.perf_counter()
    with Progress(
        console=error_console, transient=True, disable=not error_console.is_terminal
    ) as progress:
        task = progress.add_task("rendering", total=None)
        summary = generate_synthetic_dataset(
            out,
            identities=identities,
            test_identities=test_identities,
            cameras=cameras,
            images_per_identity=images_per_identity,
            size=_parse_size(size),
            seed=seed,
            workers=workers or min(4, os.cpu_count() or 1),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    elapsed = time.perf_counter() - start
    console.print(f"wrote {summary.images} images to {out} in {elapsed:.1f} s")


@dataset_app.command("from-mot")
def dataset_from_mot(
    context: typer.Context,
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="MOTChallenge sequence folders (seqinfo.ini, img1/, gt/gt.txt), videos with "
            "MOT labels, camera folders holding one video, or folders of these.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Argument(help="New folder for the Market-1501-layout dataset.")],
    labels: Annotated[
        list[Path] | None,
        typer.Option(help="Label file of each video, in order (default: <video>.txt, gt/gt.txt)."),
    ] = None,
    cameras: Annotated[
        Path | None,
        typer.Option(help="Camera mapping file (`name: camera` YAML or `name,camera` CSV)."),
    ] = None,
    global_ids: Annotated[
        bool, typer.Option(help="Track ids are the same people across cameras (multi-camera).")
    ] = False,
    classes: Annotated[
        str, typer.Option(help="MOT classes kept, or 'all' (1 pedestrian, 2 on vehicle, 7 static).")
    ] = "1,2,7",
    min_visibility: Annotated[float, typer.Option(help="Smallest visibility ratio kept.")] = 0.3,
    min_height: Annotated[int, typer.Option(help="Smallest box height in pixels kept.")] = 50,
    border: Annotated[
        str, typer.Option(help="Boxes cut by the frame border: 'clip' or 'drop'.")
    ] = "clip",
    max_per_track: Annotated[
        int, typer.Option(help="Images per identity per camera, spread over the track (0: all).")
    ] = 10,
    every: Annotated[int, typer.Option(help="At most one image every N frames (0: off).")] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="Share of identities held out for query and gallery.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the identity split.")] = 0,
    query_split: Annotated[
        str,
        typer.Option(
            help="'camera' (one query per identity per camera), 'time' (query and gallery from "
            "disjoint halves of each track; for single-camera data) or 'auto'."
        ),
    ] = "auto",
    frame_base: Annotated[
        int, typer.Option(help="Label frame number of a video's first frame (MOT: 1).")
    ] = 1,
    workers: Annotated[
        int, typer.Option(min=1, help="Threads decoding frames and writing crops.")
    ] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Market-1501 crops from tracking ground truth: an identity per track, a camera per input."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from reidnet.datatools.mot import conversion_from_command_line, nothing_written, written_stats

    given = {k: v for k, v in context.params.items() if k not in ("out", "as_json")}
    conversion = conversion_from_command_line(**given)
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns,
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
        disable=not error_console.is_terminal,
    ) as bar:
        task = bar.add_task("frames", total=None)
        report = conversion.run(
            out, lambda done, total: bar.update(task, completed=done, total=total)
        )
    if not any(report.images.values()):
        _print_conversion_report(report)
        raise nothing_written(out)
    stats = written_stats(out, report)
    if as_json:
        print(json.dumps({"report": report.as_dict(), "stats": _stats_as_dict(stats)}, indent=2))
        return
    _print_conversion_report(report)
    _print_stats_table(stats)


def _print_conversion_report(report) -> None:
    left_out = {k: v for k, v in report.dropped.items() if v}
    extra = {
        "garbled lines": report.malformed_lines,
        "unreadable frames": report.unreadable_frames,
        "frames past the video's end": report.missing_video_frames,
        "selected crops lost (bad frames)": report.lost_crops,
    }
    console.print(
        f"{report.lines} ground-truth lines from {len(report.sources)} source(s); "
        f"{report.frames_read} frames read in {report.seconds:.1f} s; "
        f"{report.clipped} boxes clipped at the frame border",
        highlight=False,
    )
    table = Table(title="Left out")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, count in {**left_out, **{k: v for k, v in extra.items() if v}}.items():
        table.add_row(reason.replace("_", " "), str(count))
    if table.row_count:
        console.print(table)
    for example in report.malformed_examples[:5]:
        console.print(f"[yellow]garbled[/] {example}", highlight=False, markup=True)
    for note in report.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    if report.evaluate_overrides:
        console.print(
            "evaluate with: " + " ".join(report.evaluate_overrides) + f" (recorded in "
            f"{Path(report.out) / 'from_mot.json'}); validate with --same-camera",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"wrote {report.images['train']} train, {report.images['query']} query and "
        f"{report.images['gallery']} gallery images of {report.identities.get('train', 0)} train "
        f"and {report.identities.get('test', 0)} test identities to {report.out}",
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------
# The fine-tuning service

DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="Folder for the database, datasets and job folders.")
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (e.g. postgresql+psycopg://...); default $REIDNET_DATABASE_URL, "
        "else SQLite in --data-dir.",
    ),
]


def _default(setting: str) -> Any:
    """A ServiceSettings default, as a `serve` option's (sizes, `*_bytes`, in MiB)."""
    default = ServiceSettings.model_fields[setting].default
    return default // MIB if setting.endswith("_bytes") else default


# `serve`'s options that set a ServiceSettings field (sizes in MiB there, bytes in the field)
SERVE_SETTINGS = {
    "database_url": "database_url",
    "max_jobs": "max_jobs",
    "max_upload_mb": "max_upload_bytes",
    "max_dataset_mb": "max_dataset_bytes",
    "max_dataset_files": "max_dataset_files",
    "max_cache_mb": "max_cache_bytes",
    "cancel_grace": "cancel_grace_seconds",
    "job_nice": "job_nice",
    "executor": "executor",
    "ray_address": "ray_address",
    "ray_gpus": "ray_gpus",
    "ray_job_cpus": "ray_job_cpus",
    "ray_schedule_timeout": "ray_schedule_timeout_seconds",
}


@app.command("serve")
def serve_command(
    context: typer.Context,
    data_dir: DataDirOption,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_jobs: Annotated[int, typer.Option(help="Jobs running at once; more queue.")] = _default(
        "max_jobs"
    ),
    database_url: DatabaseOption = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest dataset upload.")] = _default(
        "max_upload_bytes"
    ),
    max_dataset_mb: Annotated[
        int, typer.Option(help="Largest unpacked size of a dataset archive.")
    ] = _default("max_dataset_bytes"),
    max_dataset_files: Annotated[
        int, typer.Option(help="Most entries in a dataset archive.")
    ] = _default("max_dataset_files"),
    max_cache_mb: Annotated[
        int,
        typer.Option(
            help="Size of the download cache (tar.gz of ended jobs); past it the least "
            "recently downloaded archives are removed."
        ),
    ] = _default("max_cache_bytes"),
    cancel_grace: Annotated[
        float, typer.Option(help="Seconds a canceled job may take to checkpoint.")
    ] = _default("cancel_grace_seconds"),
    job_nice: Annotated[
        int,
        typer.Option(
            help="Niceness (0-19) of local jobs: they yield the CPU to the API server, so "
            "requests stay fast while a job trains on the same machine; 0: equal priority."
        ),
    ] = _default("job_nice"),
    executor: Annotated[
        str,
        typer.Option(
            help="Where jobs run: 'local' (child processes of the server) or 'ray' (Ray jobs "
            "on the cluster at --ray-address; they outlive a server restart)."
        ),
    ] = _default("executor"),
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster's dashboard / Jobs API URL, e.g. http://HEAD:8265 (default: "
            "$RAY_ADDRESS)."
        ),
    ] = None,
    ray_gpus: Annotated[
        str,
        typer.Option(
            help="'auto': jobs ask for GPUs (train.num_gpus; one for the others) only when the "
            "cluster has GPUs; 'always': even when it has none yet (an autoscaler adds them)."
        ),
    ] = _default("ray_gpus"),
    ray_job_cpus: Annotated[float, typer.Option(help="CPUs each Ray job asks for.")] = _default(
        "ray_job_cpus"
    ),
    ray_schedule_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a Ray job may wait to be placed before, if no node could ever hold "
            "it, it ends Error naming the missing resource."
        ),
    ] = _default("ray_schedule_timeout_seconds"),
) -> None:
    """Run the fine-tuning REST API (docs at /docs); jobs run as child processes, or on Ray.

    An option left out is read from its variable REIDNET_<SETTING>, e.g. REIDNET_MAX_JOBS=4.

    Sizes are in bytes there (REIDNET_MAX_UPLOAD_BYTES); docs/SERVICE.md lists every setting.
    """
    # One line per paragraph above: the rich help re-wraps a paragraph but keeps its line breaks.
    import functools

    import uvicorn

    from reidnet.service.app import create_app
    from reidnet.service.head_limit import BoundedHeadProtocol

    settings = _service_settings(data_dir, {}, context)
    _check_port_free(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "listening on %s: API keys travel in clear text unless a TLS proxy is in front", host
        )
    # Open log streams (?follow=true) would hold a graceful shutdown until their job ends, and
    # jobs are only stopped once the connections are closed: give connections 5 s. Idle
    # keep-alive connections are kept 30 s, longer than httpx keeps its own (5 s, uvicorn's
    # default too): with equal timeouts a client reuses a connection the server is closing at
    # that moment and gets "server disconnected" (seen under load).
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        http=functools.partial(BoundedHeadProtocol, max_head_bytes=settings.max_header_bytes),
        log_level="info",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port in use before the data folder and database are made: uvicorn binds only
    after the app has started, then prints its raw `[Errno 98]`.

    The probe binds as uvicorn's socket will (SO_REUSEADDR), so a port whose last connections
    linger in TIME_WAIT, as after a restart, counts as free. Another server could still take the
    port in the second until uvicorn binds it; it then gets uvicorn's error.
    """
    import errno
    import socket

    if not 0 <= port <= 65535:
        raise ReidnetError(f"--port {port} is not a TCP port (0 to 65535)")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ReidnetError(f"--host {host!r} cannot be resolved: {error.strerror}") from None
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's server: "::" leaves IPv4 to others
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ReidnetError(
                        f"port {port} on {host} is in use by another program: stop it, or give "
                        "another port with --port"
                    ) from None
                raise ReidnetError(
                    f"cannot listen on --host {host} --port {port}: {error.strerror}"
                ) from None


def _service_settings(
    data_dir: Path, given: dict[str, tuple[str, Any]], context: typer.Context | None = None
) -> ServiceSettings:
    """The service's settings: `given` (setting -> (option parameter, value)) and, with
    `context`, every option of SERVE_SETTINGS given on its command line; the others from
    REIDNET_<SETTING> environment variables, else their defaults.

    A value out of range, from an option or the environment, is a ReidnetError naming it.
    """
    if context is not None:
        given = given | {
            SERVE_SETTINGS[name]: (name, value)
            for name, value in context.params.items()
            if name in SERVE_SETTINGS and _from_command_line(context, name)
        }
    values = {
        setting: value * MIB if setting.endswith("_bytes") else value
        for setting, (_, value) in given.items()
    }
    try:
        return ServiceSettings(data_dir=data_dir, **values)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            setting = str(problem["loc"][0]) if problem["loc"] else ""
            if setting in given:
                name, value = given[setting]
                where = f"--{name.replace('_', '-')} {value!r}"
            else:
                where = f"{ENV_PREFIX}{setting.upper()}={problem['input']!r}"
            problems.append(f"{where}: {problem['msg']}")
        raise ReidnetError("; ".join(problems)) from None


def _from_command_line(context: typer.Context, name: str) -> bool:
    # By name: typer ships its own copy of click, whose ParameterSource is not click's.
    source = context.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _database_option(database_url: str | None) -> dict[str, tuple[str, Any]]:
    """--database-url when given (else REIDNET_DATABASE_URL, else SQLite in the data folder)."""
    return {"database_url": ("database_url", database_url)} if database_url else {}


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    data_dir: DataDirOption,
    database_url: DatabaseOption = None,
) -> None:
    """Add a user; the new API key is printed once, as the last line (only its hash is kept)."""
    from reidnet.service.auth import create_user
    from reidnet.service.db import Database

    settings = _service_settings(data_dir, _database_option(database_url))
    settings.make_folders()
    database = Database(settings.url)
    database.create_all()
    user, key = create_user(database, name)
    database.dispose()
    console.print(f"created user {user.name!r}; API key (shown only now):", highlight=False)
    print(key)


def _service_database(data_dir: Path, database_url: str | None):
    from reidnet.service.db import Database

    settings = _service_settings(data_dir, _database_option(database_url))
    settings.make_folders()
    database = Database(settings.url)
    database.create_all()
    return settings, database


UserName = Annotated[str, typer.Argument(help="The user's name (see `reidnet users list`).")]


@users_app.command("list")
def users_list(data_dir: DataDirOption, database_url: DatabaseOption = None) -> None:
    """Every user: created when, key active or revoked, and what they own."""
    from rich.table import Table

    from reidnet.service.auth import list_users

    _, database = _service_database(data_dir, database_url)
    users = list_users(database)
    database.dispose()
    table = Table("user", "created (UTC)", "key", "datasets", "experiments", "jobs")
    for user in users:
        table.add_row(
            user.name,
            user.created_at.strftime("%Y-%m-%d %H:%M"),
            "revoked" if user.revoked else "active",
            str(user.datasets),
            str(user.experiments),
            str(user.jobs),
        )
    console.print(table)


@users_app.command("revoke")
def users_revoke(
    name: UserName, data_dir: DataDirOption, database_url: DatabaseOption = None
) -> None:
    """Disable a user's API key at once (from their next request); their data stays."""
    from reidnet.service.auth import revoke_user

    _, database = _service_database(data_dir, database_url)
    revoke_user(database, name)
    database.dispose()
    console.print(f"revoked the key of {name!r}; `reidnet users rotate` gives a new one")


@users_app.command("rotate")
def users_rotate(
    name: UserName, data_dir: DataDirOption, database_url: DatabaseOption = None
) -> None:
    """Give a user a new API key (printed once, as the last line); the old one stops working."""
    from reidnet.service.auth import rotate_key

    _, database = _service_database(data_dir, database_url)
    key = rotate_key(database, name)
    database.dispose()
    console.print(f"new API key of {name!r} (shown only now):", highlight=False)
    print(key)


@users_app.command("delete")
def users_delete(
    name: UserName, data_dir: DataDirOption, database_url: DatabaseOption = None
) -> None:
    """Delete a user with all their datasets, experiments and jobs (files included)."""
    from reidnet.service.auth import delete_user

    settings, database = _service_database(data_dir, database_url)
    summary = delete_user(database, settings, name)
    database.dispose()
    console.print(
        f"deleted user {name!r} with {summary.datasets} dataset(s), {summary.experiments} "
        f"experiment(s) and {summary.jobs} job(s)",
        highlight=False,
    )


def main() -> None:
    """Console entry point: run the app, print user errors without a traceback."""
    try:
        app()
    except ReidnetError as error:
        error_console.print(Text.assemble(("error: ", "bold red"), str(error)), highlight=False)
        sys.exit(getattr(error, "exit_code", 2))
    except KeyboardInterrupt:
        error_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except Exception as error:
        from reidnet.doctor import broken_install

        message = broken_install(error)
        if message is None:
            raise
        error_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False)
        sys.exit(2)
