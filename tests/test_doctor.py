"""`reidnet doctor` reports the installation, and a torch/torchvision pair that cannot work
together is one message naming both versions and the fix, not a traceback on every command."""

import json
import os
import subprocess
import sys
from importlib.metadata import version


def _reidnet(*args: str, fake_torchvision=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fake_torchvision is not None:  # found before the real one, as a mismatched wheel is
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(fake_torchvision), env.get("PYTHONPATH")) if p
        )
    return subprocess.run(
        [sys.executable, "-m", "reidnet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _broken_torchvision(tmp_path):
    """A torchvision that fails to import the way a wheel built for another torch does."""
    package = tmp_path / "fake" / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    return package.parent


def test_a_broken_torchvision_gives_one_message_with_both_versions_and_the_fix(tmp_path):
    ran = _reidnet(
        "quickstart", "--out", str(tmp_path / "qs"), fake_torchvision=_broken_torchvision(tmp_path)
    )
    assert ran.returncode == 2
    output = ran.stdout + ran.stderr
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 6, output
    assert f"torchvision {version('torchvision')}" in output
    assert f"torch {version('torch')}" in output
    assert "torchvision::nms does not exist" in output
    assert "pip install --force-reinstall torch torchvision" in output
    assert not (tmp_path / "qs").exists()  # it stopped before making anything


def test_doctor_lists_the_versions_and_the_device(tmp_path):
    import torch

    ran = _reidnet("doctor", "--json")
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))
    assert found["packages"]["torch"] == version("torch")
    assert found["packages"]["onnxruntime"] == version("onnxruntime")
    assert found["problems"] == {}
    assert found["device"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    extras = {feature["package"]: feature for feature in found["features"]}
    assert extras["ray"]["install"] == 'pip install "reidnet[ray]"'


def test_doctor_names_a_package_that_is_installed_but_does_not_import(tmp_path):
    ran = _reidnet("doctor", fake_torchvision=_broken_torchvision(tmp_path))
    assert ran.returncode == 1
    assert "Traceback" not in ran.stdout + ran.stderr
    line = next(line for line in ran.stdout.splitlines() if "torchvision:" in line)
    assert "BROKEN" in line and "torchvision::nms does not exist" in line
