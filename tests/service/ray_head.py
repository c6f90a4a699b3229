"""A one-node Ray cluster on loopback (2 CPUs, no GPU, the dashboard for the Jobs API), for the
Ray tests and benchmarks/ray_overhead.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from live_server import free_port, wait_until_answers


def ray_command(*args: str) -> list[str]:
    beside = Path(sys.executable).with_name("ray")  # the `ray` of this Python
    return [str(beside) if beside.is_file() else shutil.which("ray") or "ray", *args]


class RayHead:
    """`ray start --head` on free loopback ports; `stop()` runs `ray stop`.

    `ray stop` ends every Ray process of this user on the machine: run one head at a time.
    """

    def __init__(self, num_cpus: int = 2):
        self.num_cpus = num_cpus
        # Ray's socket paths must stay under the 107-byte limit: a short folder, not tmp_path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="reidnet-ray-", dir="/tmp"))
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout: float = 180) -> RayHead:
        started = subprocess.run(
            ray_command(
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={free_port()}",
                f"--num-cpus={self.num_cpus}",
                "--num-gpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.temp_dir}",
                "--object-store-memory=100000000",
                "--disable-usage-stats",
            ),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if started.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        if wait_until_answers(f"{self.address}/api/version", 60):  # a moment after the head
            return self
        self.stop()
        raise RuntimeError(f"the Ray dashboard at {self.address} did not answer in 60 s")

    def stop(self) -> None:
        subprocess.run(
            ray_command("stop", "--force"), env=self.env, capture_output=True, timeout=120
        )
        shutil.rmtree(self.temp_dir, ignore_errors=True)
