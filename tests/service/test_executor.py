"""Executor pieces that need no cluster: the Ray entrypoint's stop rules and exit statuses, how
orphaned job processes are found and stopped, and the promise that nothing imports Ray unless
`--executor ray` is chosen."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from reidnet.service.executor import (
    ENDED_UNSEEN,
    Ended,
    Launch,
    LocalProcessExecutor,
    group_members,
)
from reidnet.service.exit_status import EXIT_STATUS_ENV, EXIT_STATUS_FILE
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


def test_a_zombie_is_not_a_live_member_of_its_group():
    ended = subprocess.Popen(["true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(ended.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        assert group_members(ended.pid) == []
        assert LocalProcessExecutor().poll({"pid": ended.pid}) is not None  # not ours: ended
    finally:
        ended.wait()


# The job's leader exits on SIGTERM (as the trainer does, after its checkpoint); its worker, which
# names the job folder on its command line, ignores SIGTERM; a helper that does not name it (as a
# process that reused an id would not) must be left alone.
ORPHAN_LEADER = """
import signal, subprocess, sys, time
folder = sys.argv[1]
worker = (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1], 'worker-ready').touch(); time.sleep(120)"
)
subprocess.Popen([sys.executable, "-c", worker, folder])
unrelated = subprocess.Popen(["sleep", "120"])
open(folder + "/unrelated.pid", "w").write(str(unrelated.pid))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(120)
"""


def test_reaping_an_orphan_sigterms_its_leader_and_kills_its_job_processes_after_the_grace(
    tmp_path,
):
    folder = tmp_path / "jobs" / "j1"
    folder.mkdir(parents=True)
    leader = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_LEADER, str(folder)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (folder / "worker-ready").exists() or not (folder / "unrelated.pid").exists():
            assert time.monotonic() < deadline and leader.poll() is None, "the job never started"
            time.sleep(0.05)
        unrelated = psutil.Process(int((folder / "unrelated.pid").read_text()))
        members = group_members(leader.pid)
        assert leader.pid in members and unrelated.pid in members and len(members) == 3
        worker = next(p for p in members if p not in (leader.pid, unrelated.pid))

        started = time.monotonic()
        handle = {"executor": "local", "host": socket.gethostname(), "pid": leader.pid}
        LocalProcessExecutor().reap_orphan(handle, folder, grace_seconds=1.0)
        assert time.monotonic() - started >= 1.0  # the worker ignored SIGTERM: the grace ran
        assert leader.wait(timeout=5) == 0  # SIGTERM, handled: it exited on its own
        assert group_members(leader.pid) == [unrelated.pid]  # the worker was killed
        assert (
            not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_reaping_skips_a_handle_from_another_host(tmp_path):
    sleep = "import time; time.sleep(30)"
    sleeper = subprocess.Popen([sys.executable, "-c", sleep, str(tmp_path)], start_new_session=True)
    try:
        handle = {"executor": "local", "host": "another-host", "pid": sleeper.pid}
        LocalProcessExecutor().reap_orphan(handle, tmp_path, grace_seconds=0)
        with pytest.raises(subprocess.TimeoutExpired):  # still running a second later
            sleeper.wait(timeout=1)
    finally:
        sleeper.kill()
        sleeper.wait()


TAO_SPEC = Path(__file__).parents[1] / "data" / "tao_reid_train_spec.yaml"


def ended_job(folder: Path, command: list[str]) -> dict:
    """The handle of a job process that ran in `folder`, as the local executor starts one, and
    ended while no server watched it (what a restarted server finds)."""
    env = {**os.environ, EXIT_STATUS_ENV: str(folder / EXIT_STATUS_FILE)}
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL)
    process.wait(timeout=120)
    return {"executor": "local", "host": socket.gethostname(), "pid": process.pid}


@pytest.mark.parametrize(
    ("spec", "ended"),
    [(TAO_SPEC, Ended(0)), (Path("missing.yaml"), Ended(2))],  # 2: the CLI's user error
)
def test_a_job_that_ended_while_no_server_watched_is_reaped_with_the_status_it_recorded(
    tmp_path, spec, ended
):
    handle = ended_job(
        tmp_path, [sys.executable, "-m", "reidnet", "spec", "check", "-e", str(spec)]
    )
    assert LocalProcessExecutor().reap_orphan(handle, tmp_path, grace_seconds=0) == ended


def test_a_job_killed_while_no_server_watched_is_reaped_as_unfinished(tmp_path):
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"  # writes no exit status
    handle = ended_job(tmp_path, [sys.executable, "-c", killed, str(tmp_path)])
    assert LocalProcessExecutor().reap_orphan(handle, tmp_path, grace_seconds=0) == Ended(
        None, ENDED_UNSEEN
    )


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


@pytest.mark.parametrize("job_nice", [10, 0])
def test_local_jobs_run_at_the_niceness_the_server_gives_them(tmp_path, job_nice):
    launch = Launch(
        job_id="j1",
        action="train",
        job_dir=tmp_path,
        spec_file=tmp_path / "missing.yaml",  # the job fails fast, after it started
        log_file=tmp_path / "job.log",
    )
    executor = LocalProcessExecutor(job_nice)
    handle = executor.launch(launch)
    process = psutil.Process(handle["pid"])
    deadline = time.monotonic() + 30
    while process.cmdline()[0] != sys.executable:  # until `nice` has exec'd the job
        assert time.monotonic() < deadline
        time.sleep(0.005)
    seen = process.nice()  # the job takes over a second to fail: it is still there
    assert seen == os.nice(0) + job_nice
    assert process.cmdline()[1:4] == ["-m", "reidnet", "train"]  # the job's pid, exec'd
    while executor.poll(handle) is None:
        time.sleep(0.05)
