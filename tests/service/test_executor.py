"""Executor pieces that need no cluster: the Ray entrypoint's stop rules and exit statuses, and the
promise that nothing imports Ray unless `--executor ray` is chosen."""

from __future__ import annotations

import os
import subprocess
import sys

from reidnet.service.executor import group_members
from reidnet.service.ray_entry import Control, read_control, run, stop_request, write_control


def test_a_run_obeys_only_stops_meant_for_it(tmp_path):
    control = tmp_path / ".ray-control.json"
    assert stop_request(control, "reidnet-a-1") is None  # no file yet: run
    write_control(control, Control("reidnet-a-1"))
    assert stop_request(control, "reidnet-a-1") is None
    write_control(control, Control("reidnet-a-1", stop=True, grace_seconds=30))
    assert stop_request(control, "reidnet-a-1") == Control("reidnet-a-1", True, 30.0)
    # The job was resumed as run 2 (shorter text: the file is rewritten in place, not appended)
    write_control(control, Control("reidnet-a-2"))
    assert read_control(control) == Control("reidnet-a-2")
    assert stop_request(control, "reidnet-a-1") == Control("reidnet-a-1", True, 0.0)
    assert stop_request(control, "reidnet-a-2") is None
    control.write_text('{"submission_id": "reidnet-a-')  # caught half written: no answer yet
    assert stop_request(control, "reidnet-a-2") is None


def test_a_run_stopped_before_it_started_never_runs_its_command(tmp_path, capsys):
    control = tmp_path / ".ray-control.json"
    write_control(control, Control("reidnet-b-1", stop=True, grace_seconds=5))
    marker = tmp_path / "ran"
    assert run(control, "reidnet-b-1", ["dataset", "synth", str(marker)]) == 128 + 15
    assert not marker.exists()
    assert "stop requested before reidnet-b-1 started" in capsys.readouterr().out


def test_a_run_exits_with_the_status_of_its_reidnet_command(tmp_path):
    control = tmp_path / ".ray-control.json"
    write_control(control, Control("reidnet-c-1"))
    assert run(control, "reidnet-c-1", ["--help"]) == 0
    assert run(control, "reidnet-c-1", ["no-such-action"]) == 2  # the CLI's usage error


def test_group_members_lists_live_processes_of_a_group():
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert group_members(sleeper.pid) == [sleeper.pid]
        assert os.getpid() not in group_members(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert group_members(sleeper.pid) == []


def test_nothing_imports_ray_unless_the_ray_executor_is_chosen(tmp_path):
    script = (
        "import sys\n"
        "import reidnet, reidnet.cli, reidnet.client\n"
        "from reidnet.service.app import create_app\n"
        "from reidnet.service.settings import ServiceSettings\n"
        f"app = create_app(ServiceSettings(data_dir={str(tmp_path)!r}))\n"
        "assert type(app.state.service.jobs.executor).__name__ == 'LocalProcessExecutor'\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
