"""What this installation has: versions, the device, and which features lack a package.

`reidnet doctor` prints it (what a bug report needs), and `broken_install` turns the likeliest
failure of a CPU install, a torch and torchvision built for each other's wrong release, into one
line naming both versions and the fix instead of a traceback on every command.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from reidnet.errors import exception_chain

REINSTALL_HINT = (
    "reinstall both from the same index, e.g. `pip install --force-reinstall torch torchvision "
    "--index-url https://download.pytorch.org/whl/cpu` (or the CUDA index your torch came from)"
)


@dataclass(frozen=True)
class Feature:
    """An optional part of reidnet and the distribution it needs (module: its import name)."""

    name: str
    distribution: str
    module: str
    extra: str


FEATURES = (
    Feature("video sources of `dataset from-mot`", "av", "av", "video"),
    Feature("`serve --executor ray`", "ray", "ray", "ray"),
    Feature("`serve --database-url` on PostgreSQL", "psycopg", "psycopg", "postgres"),
    Feature("notebooks", "jupyterlab", "jupyterlab", "notebooks"),
)
CORE = ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pydantic", "fastapi")


def installed_version(distribution: str) -> str | None:
    """The installed version from the package metadata; it is read without importing the
    package, so a package that fails to import still shows what it is."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def broken_install(error: BaseException) -> str | None:
    """One message for a torch/torchvision pair that cannot work together, else None."""
    for cause in exception_chain(error):
        text = str(cause)
        if "torchvision::" in text and "does not exist" in text:
            return (
                f"torchvision {installed_version('torchvision')} does not work with torch "
                f"{installed_version('torch')} ({text.strip().splitlines()[-1]}): "
                f"{REINSTALL_HINT}; `reidnet doctor` lists what is installed"
            )
    return None


def _import_problem(module: str) -> str | None:
    """None when `module` imports, else its error in one line."""
    try:
        importlib.import_module(module)
    except Exception as error:  # any failure to import is what the report is for
        return broken_install(error) or f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def device_report() -> dict:
    """CUDA and its devices, or the CPU with its thread count."""
    import torch

    if torch.cuda.is_available():
        return {
            "device": "cuda",
            "cuda": torch.version.cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        }
    built = torch.version.cuda
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "note": f"torch built for CUDA {built}, no GPU visible" if built else "CPU build of torch",
    }


def report() -> dict:
    """Everything `reidnet doctor` prints, as plain data (its --json)."""
    from reidnet._version import __version__

    packages = {name: installed_version(name) for name in CORE}
    problems = {
        name: problem
        for name in ("torch", "torchvision", "onnxruntime")
        if packages[name] and (problem := _import_problem(name))
    }
    device = (
        device_report()
        if packages["torch"] and "torch" not in problems
        else {"device": None, "note": problems.get("torch", "torch is not installed")}
    )
    features = [
        {
            "feature": feature.name,
            "package": feature.distribution,
            "version": installed_version(feature.distribution),
            "install": f'pip install "reidnet[{feature.extra}]"',
        }
        for feature in FEATURES
    ]
    return {
        "reidnet": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "problems": problems,
        "device": device,
        "features": features,
    }
