"""The command line: help everywhere, spec commands, clean user errors (exit 2, no traceback)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reidnet.cli import app

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
