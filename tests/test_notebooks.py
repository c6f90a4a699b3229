"""The two fine-tuning notebooks, executed end to end (nbclient) on tiny synthetic data.

The REST notebook drives a real `reidnet serve` on loopback; the CLI notebook runs the commands.
Both read their settings from REIDNET_* environment variables, which the kernel inherits.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from live_server import LiveServer, create_user

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = pytest.mark.slow


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    print(f"{name} executed in {time.perf_counter() - start:.1f} s")
    return notebook


def text_output(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def image_outputs(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.fixture
def quick_env(monkeypatch, tmp_path) -> Path:
    workdir = tmp_path / "work"
    monkeypatch.setenv("REIDNET_WORKDIR", str(workdir))
    monkeypatch.setenv("REIDNET_QUICK", "1")
    monkeypatch.delenv("REIDNET_DATA", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return workdir


def test_rest_api_notebook_runs_the_whole_flow_against_a_server(quick_env, monkeypatch, tmp_path):
    server = LiveServer(tmp_path / "service").start()
    try:
        monkeypatch.setenv("REIDNET_URL", server.url)
        monkeypatch.setenv("REIDNET_API_KEY", create_user(server.data_dir, "notebook"))
        notebook = execute("finetune_rest_api.ipynb", tmp_path)
    finally:
        server.stop()
    artifacts = quick_env / "artifacts"
    assert (artifacts / "reid_model.onnx").is_file()
    assert (artifacts / "reid_model_latest.pth").is_file()
    assert (quick_env / "training_curves.png").is_file()
    assert image_outputs(notebook) >= 3  # training curves, CMC curve, sampled matches
    assert "embeddings (" in text_output(notebook)


def test_cli_notebook_runs_the_whole_flow(quick_env, tmp_path):
    notebook = execute("finetune_cli.ipynb", tmp_path)
    results = quick_env / "results"
    assert (results / "export" / "reid_model.onnx").is_file()
    assert (results / "evaluate" / "results.json").is_file()
    assert image_outputs(notebook) >= 3
    assert "embeddings (" in text_output(notebook)


@pytest.mark.parametrize("name", ["finetune_rest_api.ipynb", "finetune_cli.ipynb"])
def test_notebooks_are_kept_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
