"""`reidnet serve`'s settings: an option given wins over its REIDNET_* environment variable, which
wins over the default; sizes are MiB on the command line and bytes in the environment; the help
shows every default, and a bad value is named with where it came from."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from reidnet.cli import app
from reidnet.errors import ReidnetError

MIB = 1024 * 1024
runner = CliRunner()


@pytest.fixture
def served(monkeypatch):
    """Run `serve` up to the point where it would listen; the settings it built."""
    built = {}
    monkeypatch.setattr("reidnet.service.app.create_app", lambda settings: built.update(s=settings))
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    monkeypatch.setattr("reidnet.cli._check_port_free", lambda host, port: None)  # 8000 may be busy
    for name in ("MAX_JOBS", "MAX_UPLOAD_BYTES", "CANCEL_GRACE_SECONDS", "EXECUTOR"):
        monkeypatch.delenv(f"REIDNET_{name}", raising=False)

    def serve(*options: str):
        result = runner.invoke(app, ["serve", *options])
        if result.exception is not None:
            raise result.exception
        return built["s"]

    return serve


def test_an_option_wins_over_its_environment_variable_which_wins_over_the_default(
    served, tmp_path, monkeypatch
):
    monkeypatch.setenv("REIDNET_MAX_JOBS", "3")
    monkeypatch.setenv("REIDNET_CANCEL_GRACE_SECONDS", "7.5")
    monkeypatch.setenv("REIDNET_MAX_UPLOAD_BYTES", str(5 * MIB))
    settings = served(
        "--data-dir", str(tmp_path / "d"), "--max-jobs", "2", "--max-dataset-mb", "10"
    )
    assert settings.max_jobs == 2  # the option, not the environment's 3
    assert settings.cancel_grace_seconds == 7.5  # the environment, not the default 60
    assert settings.max_upload_bytes == 5 * MIB  # the environment holds bytes
    assert settings.max_dataset_bytes == 10 * MIB  # the option is in MiB
    assert settings.max_dataset_files == 1_000_000  # neither: the default
    assert settings.executor == "local"
    assert settings.data_dir == (tmp_path / "d").resolve() and settings.data_dir.is_absolute()


def test_an_option_given_with_its_default_value_still_wins_over_the_environment(
    served, tmp_path, monkeypatch
):
    monkeypatch.setenv("REIDNET_MAX_JOBS", "3")
    assert served("--data-dir", str(tmp_path), "--max-jobs", "1").max_jobs == 1


def test_a_bad_value_names_the_option_or_the_environment_variable(served, tmp_path, monkeypatch):
    with pytest.raises(ReidnetError, match=r"--executor 'kubernetes': Input should be 'local' or"):
        served("--data-dir", str(tmp_path), "--executor", "kubernetes")
    with pytest.raises(ReidnetError, match=r"--max-upload-mb 0: .*greater than or equal to 1"):
        served("--data-dir", str(tmp_path), "--max-upload-mb", "0")
    monkeypatch.setenv("REIDNET_MAX_JOBS", "0")
    with pytest.raises(ReidnetError, match=r"REIDNET_MAX_JOBS='0': .*greater than or equal to 1"):
        served("--data-dir", str(tmp_path))


def test_serve_help_shows_each_default_in_the_options_unit():
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        option = re.search(r"(--[a-z-]+)\s", line)
        default = re.search(r"\[default: ([^\]]+)\]", line)
        if option:
            current = option.group(1)
        if default:
            rows[current] = default.group(1)
    assert rows == {
        "--host": "127.0.0.1",
        "--port": "8000",
        "--max-jobs": "1",
        "--max-upload-mb": "20480",  # 20 GiB
        "--max-dataset-mb": "51200",  # 50 GiB
        "--max-dataset-files": "1000000",
        "--max-cache-mb": "5120",  # 5 GiB
        "--cancel-grace": "60.0",
        "--job-nice": "10",
        "--executor": "local",
        "--ray-gpus": "auto",
        "--ray-job-cpus": "1.0",
        "--ray-schedule-timeout": "600.0",
    }
