"""The README and notebooks tell a new user what they need before they need it."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_is_exactly_two_commands_after_the_set_up():
    """The set-up (a virtual environment, then the CPU wheels) comes before `pip install -e .`,
    in the block a newcomer copies: after it, pip would keep the CUDA wheels it pulled."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first, second = re.findall(r"```bash\n(.*?)```", section, re.S)[:2]
    lines = [line.split("  #")[0].strip() for line in first.strip().splitlines()]
    assert lines == [
        "python3 -m venv .venv && . .venv/bin/activate",
        "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu",
        "pip install -e . && reidnet quickstart",
    ]
    assert second.strip() == 'pip install -e ".[dev]" && pytest -q'


def test_cpu_only_install_and_imagenet_weights_are_explained():
    assert (
        "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in README
    )
    recipe = README.split("configs/market1501_resnet50.yaml", 1)[1][:800]
    assert "model.pretrained_model_path" in recipe and "resnet50-0676ba61.pth" in recipe


def test_notebooks_extra_installs_jupyter_and_the_readme_says_how_to_run_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in extras["notebooks"]}
    assert {"jupyterlab", "ipykernel"} <= names
    assert 'pip install -e ".[notebooks]"' in README and "REIDNET_QUICK=1" in README


def test_each_notebook_explains_reidnet_quick_in_markdown_before_the_code_reads_it():
    for name in ("finetune_cli.ipynb", "finetune_rest_api.ipynb"):
        cells = nbformat.read(ROOT / "notebooks" / name, as_version=4).cells
        reads = next(
            i for i, c in enumerate(cells) if "REIDNET_QUICK" in c.source and c.cell_type == "code"
        )
        explained = [
            c
            for c in cells[:reads]
            if c.cell_type == "markdown" and "`REIDNET_QUICK=1`" in c.source
        ]
        assert explained, name
