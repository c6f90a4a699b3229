"""`reidnet serve` itself: a busy port is refused before anything is created, and its help
reads as written at any width."""

from __future__ import annotations

import socket
import subprocess

from typer.testing import CliRunner

from live_server import reidnet_command
from reidnet.cli import app


def test_a_busy_port_is_one_line_naming_it_and_leaves_no_data_folder(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        done = subprocess.run(
            reidnet_command("serve", "--data-dir", str(data_dir), "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use by another program: stop it, or give "
        "another port with --port"
    ]
    assert not data_dir.exists()  # neither the folder nor its database was made


def test_the_help_breaks_no_paragraph_where_the_terminal_has_room():
    result = CliRunner().invoke(
        app, ["serve", "--help"], env={"COLUMNS": "200"}, terminal_width=200
    )
    assert result.exit_code == 0, result.output
    description = result.output.split("Options")[0].split("Usage: reidnet serve [OPTIONS]")[1]
    lines = [line.strip() for line in description.splitlines() if line.strip(" │╭─")]
    assert len(lines) >= 2
    assert all(line.endswith(".") for line in lines), lines  # each paragraph whole on its line
