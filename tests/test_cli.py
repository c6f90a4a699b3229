"""The command line: help everywhere, spec commands, clean user errors (exit 2, no traceback),
and train / evaluate / inference / export / serve run for real on the tiny synthetic set (one
1-epoch training per module, shared by the action tests)."""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from reidnet.cli import app
from tiny_training import TINY, chance_map, query_and_gallery

runner = CliRunner()
TAO_SPEC = Path(__file__).parent / "data" / "tao_reid_train_spec.yaml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reidnet", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["spec"],
        ["spec", "check"],
        ["dataset"],
        ["dataset", "validate"],
        ["dataset", "stats"],
        ["dataset", "synth"],
        ["default-specs"],
    ],
)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


@pytest.mark.parametrize("command", list(_commands(typer.main.get_group(app))), ids=" ".join)
def test_every_help_paragraph_is_one_line_where_the_terminal_has_room(command):
    """typer keeps a docstring's line breaks after its first paragraph and rich re-wraps each
    of those lines, so `train --help` showed lines cut after 'GPU; under'. With room, every
    paragraph of the description is one line, the paragraphs apart by blank lines."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=400, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    description = result.output.split("╭")[0].split("Usage:")[1].splitlines()[1:]
    lines = [line.strip() for line in description]
    assert lines and all(not (a and b) for a, b in itertools.pairwise(lines)), description


def test_spec_check_prints_resolved_spec_with_overrides():
    result = runner.invoke(app, ["spec", "check", "-e", str(TAO_SPEC), "train.num_epochs=7"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)  # warnings (encryption_key) go to stderr
    assert resolved["train"]["num_epochs"] == 7
    assert resolved["train"]["optim"]["lr_steps"] == [40, 70]  # legacy `steps` resolved
    assert resolved["train"]["cudnn"]["deterministic"] is True  # a default filled in


def test_user_error_prints_one_message_and_exits_2():
    result = run_cli("spec", "check", "-e", str(TAO_SPEC), "train.optim.base_lrr=0.1")
    assert result.returncode == 2
    assert "did you mean 'base_lr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_specs_command_writes_four_files(tmp_path):
    result = runner.invoke(app, ["default-specs", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "specs").iterdir()) == [
        "evaluate.yaml",
        "export.yaml",
        "inference.yaml",
        "train.yaml",
    ]


def test_import_stays_light():
    code = (
        "import sys, reidnet, reidnet.config, reidnet.data.market; "
        "heavy = {'fastapi', 'matplotlib', 'torch', 'uvicorn'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_output_to_a_file_is_one_plain_line_per_record(tmp_path):
    """Piped to a file, nothing wraps at 80 columns: a long path stays on its line, every log
    record is one line with an ISO 8601 timestamp, and there are no colour codes."""
    out = tmp_path / ("a-folder-with-a-name-long-enough-to-wrap-at-eighty-columns" * 2) / "synth"
    with open(tmp_path / "stdout.txt", "w") as stdout, open(tmp_path / "stderr.txt", "w") as err:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "reidnet",
                "-v",
                "dataset",
                "synth",
                str(out),
                "--identities",
                "4",
                "--test-identities",
                "2",
                "--images-per-identity",
                "2",
            ],
            stdout=stdout,
            stderr=err,
            timeout=120,
        )
    assert result.returncode == 0
    printed = (tmp_path / "stdout.txt").read_text().splitlines()
    assert any(str(out) in line for line in printed), printed
    records = (tmp_path / "stderr.txt").read_text().splitlines()
    assert records, "the run logs what it wrote"
    iso = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) "
    )
    for line in records:
        assert iso.match(line), line
    assert "\x1b[" not in "".join(printed + records)


def _help_at_80_columns(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_same_camera_filter_is_a_pair_of_positive_flags_shown_whole_at_80_columns():
    text = _help_at_80_columns("dataset", "validate")
    assert "--cross-camera" in text and "--same-camera " in text
    assert "--no-" not in text  # no negated (or doubly negated) spelling


def test_flags_show_no_value_type_and_take_no_value():
    for command in (["export"], ["convert"], ["dataset", "validate"], []):
        text = _help_at_80_columns(*command)
        assert "<bool>" not in text, command
        assert "--help" in text


@pytest.mark.parametrize(
    ("command", "example"),
    [
        (["train"], "train.num_epochs=5"),
        (["evaluate"], "evaluate.checkpoint="),
        (["inference"], "inference.checkpoint="),
        (["export"], "export.checkpoint="),
    ],
)
def test_overrides_example_belongs_to_the_command(command, example):
    text = _help_at_80_columns(*command)
    assert example in text
    if command != ["train"]:
        assert "train.num_epochs" not in text


def test_verbose_after_the_subcommand_enables_debug_but_not_for_third_party_loggers():
    import logging

    result = runner.invoke(app, ["spec", "check", "-e", str(TAO_SPEC), "-v", "train.seed=3"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["train"]["seed"] == 3  # -v not taken as an override
    assert logging.getLogger("reidnet.config").isEnabledFor(logging.DEBUG)
    for name in ("matplotlib.font_manager", "PIL.PngImagePlugin"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    result = runner.invoke(app, ["spec", "check", "-e", str(TAO_SPEC)])
    assert not logging.getLogger("reidnet.config").isEnabledFor(logging.DEBUG)


# --- the actions, run for real on the tiny synthetic set -------------------------------------


@pytest.fixture(scope="module")
def cli_spec(synthetic, tmp_path_factory) -> Path:
    """A spec file as a user writes one: TINY on the synthetic folders."""
    raw = json.loads(json.dumps(TINY))
    raw["dataset"].update(
        train_dataset_dir=str(synthetic / "bounding_box_train"),
        test_dataset_dir=str(synthetic / "bounding_box_test"),
        query_dataset_dir=str(synthetic / "query"),
    )
    spec_file = tmp_path_factory.mktemp("cli") / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    return spec_file


@pytest.fixture(scope="module")
def cli_checkpoint(cli_spec, tmp_path_factory) -> Path:
    """`reidnet train -e spec.yaml train.num_epochs=1 results_dir=...`, run once per module."""
    results = tmp_path_factory.mktemp("cli-train")
    result = runner.invoke(
        app, ["train", "-e", str(cli_spec), "train.num_epochs=1", f"results_dir={results}"]
    )
    assert result.exit_code == 0, result.output
    checkpoint = results / "train" / "model_epoch_001.pth"
    assert "model_epoch_001.pth" in result.output
    return checkpoint


@pytest.mark.slow
def test_train_writes_a_checkpoint_of_the_spec_with_the_override(cli_checkpoint):
    from reidnet.runtime import checkpoint as ckpt

    saved = ckpt.load_checkpoint(cli_checkpoint)
    assert saved["epoch"] == 1  # train.num_epochs=1 from the command line, not the file's 2
    assert saved["architecture"]["backbone"] == "resnet_18"
    assert (saved["architecture"]["input_height"], saved["architecture"]["input_width"]) == (32, 16)
    assert saved["num_classes"] == 16  # the training identities of the synthetic set
    assert (cli_checkpoint.parent / "reid_model_latest.pth").is_file()


def test_evaluate_prints_and_writes_the_map(cli_spec, cli_checkpoint, synthetic, tmp_path):
    args = [f"evaluate.checkpoint={cli_checkpoint}", f"results_dir={tmp_path}"]
    result = runner.invoke(app, ["evaluate", "-e", str(cli_spec), *args])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    assert saved["checkpoint"] == str(cli_checkpoint)
    # One epoch on this set scores about 0.5; a random ranking about 0.16.
    assert saved["mAP"] > 2 * chance_map(*query_and_gallery(synthetic)), saved["mAP"]
    query = len(list((synthetic / "query").iterdir()))
    assert saved["num_valid_queries"] == query
    # The printed table holds the saved numbers, in percent.
    assert f"{100 * saved['mAP']:.2f}" in result.output
    assert f"{100 * saved['rank-1']:.2f}" in result.output
    assert "results.json" in result.output


def test_inference_writes_an_embedding_of_every_image(
    cli_spec, cli_checkpoint, synthetic, tmp_path
):
    args = [f"inference.checkpoint={cli_checkpoint}", f"results_dir={tmp_path}"]
    result = runner.invoke(app, ["inference", "-e", str(cli_spec), *args])
    assert result.exit_code == 0, result.output
    images = sorted(p.name for p in (synthetic / "query").iterdir()) + sorted(
        p.name for p in (synthetic / "bounding_box_test").iterdir()
    )
    assert f"{len(images)} embeddings" in result.output
    folder = tmp_path / "inference"
    entries = json.loads((folder / "result.json").read_text())
    assert [Path(entry["img_path"]).name for entry in entries] == images
    matrix = np.load(folder / "result.npy")
    assert matrix.shape == (len(images), 64) and np.isfinite(matrix).all()
    assert len(np.unique(matrix.round(4), axis=0)) == len(images)  # one per image, not a copy


def test_export_writes_an_onnx_file_onnxruntime_runs(cli_spec, cli_checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    target = tmp_path / "reid.onnx"
    args = [f"export.checkpoint={cli_checkpoint}", f"export.onnx_file={target}"]
    result = runner.invoke(app, ["export", "-e", str(cli_spec), *args])
    assert result.exit_code == 0, result.output
    assert "parity:" in result.output and "reid.onnx" in result.output
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["fc_pred"]
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 16)).astype(np.float32)
    (embeddings,) = session.run(None, {"input": images})
    assert embeddings.shape == (3, 64) and np.isfinite(embeddings).all()
    assert (tmp_path / "deepstream_tracker_reid.yml").is_file()


def test_serve_answers_health_and_openapi(tmp_path):
    import httpx

    from live_server import LiveServer
    from reidnet import __version__

    server = LiveServer(tmp_path / "service").start()  # returns once /api/v1/health answers
    try:
        health = httpx.get(f"{server.url}/api/v1/health", timeout=10)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "version": __version__}
        paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
        assert {"/api/v1/health", "/api/v1/datasets"} <= set(paths)
        # Everything else needs an API key.
        assert httpx.get(f"{server.url}/api/v1/datasets", timeout=10).status_code == 401
    finally:
        server.stop()
