"""What the README tells a user to type does what it says: its commands are read out of the
README and parsed by the real command line, its spec keys loaded by the real spec loader, its
paths and links found in the repository, its test commands the ones CI runs.

Nothing here compares README prose with a copy of itself: each test extracts what the README
names and checks it against the thing it names.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()
SPEC_SECTIONS = ("model", "dataset", "train", "evaluate", "inference", "export", "re_ranking")


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def code_spans(text: str) -> list[str]:
    """Inline code, outside the blocks; a span that wraps onto the next line is one span."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a bash block as argument lists: continuation lines joined, comments
    dropped, `&&` chains split."""
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while "&&" in words:
            cut = words.index("&&")
            commands.append(words[:cut])
            words = words[cut + 1 :]
        if words:
            commands.append(words)
    return commands


def reidnet_arguments(words: list[str]) -> list[str] | None:
    """The arguments of a `reidnet ...` command line (also `... -m reidnet ...`), with the
    README's optional parts `[--input crops/]` taken as given; None for other commands."""
    if words[:1] == ["reidnet"]:
        arguments = words[1:]
    elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["reidnet"]:
        arguments = words[words.index("-m") + 2 :]
    else:
        return None
    unbracketed = []
    for word in arguments:
        word = word.removeprefix("[")
        if word.endswith("]") and "[" not in word:  # not a list value: `train.gpu_ids=[0,1]`
            word = word[:-1]
        if word:
            unbracketed.append(word)
    return unbracketed


def readme_reidnet_commands(inline: bool = True) -> list[list[str]]:
    """Every reidnet command line of the README's bash blocks, and its inline ones."""
    lines = [words for block in code_blocks(README) for words in shell_commands(block)]
    if inline:
        lines += [shlex.split(span) for span in code_spans(README) if span.startswith("reidnet ")]
    return [args for args in map(reidnet_arguments, lines) if args is not None]


def parse_with_the_cli(arguments: list[str]) -> list[tuple[str, dict]]:
    """Run `reidnet <arguments>` through the real command tree with every command's body
    replaced by a recorder: options, types and arguments are parsed exactly as a user's run
    parses them, and nothing runs. Returns (command path, parsed parameters), outermost first."""
    import typer.main

    from reidnet.cli import app

    root = typer.main.get_command(app)  # a fresh click tree: the stubs stay in this copy
    calls: list[tuple[str, dict]] = []

    def stub(command, path: str) -> None:
        command.callback = lambda **params: calls.append((path, params))
        for name, subcommand in getattr(command, "commands", {}).items():
            stub(subcommand, f"{path} {name}")

    stub(root, "reidnet")
    root.main(arguments, prog_name="reidnet", standalone_mode=False)
    return calls


def spec_overrides(arguments: list[str]) -> list[str]:
    """The `section.key=value` words of a command; a `...` value is the reader's own (a path
    to fill in), so a placeholder path stands for it."""
    words = [w for w in arguments if re.match(rf"({'|'.join(SPEC_SECTIONS)})\.[\w.]+=", w)]
    return [re.sub(r"=\.\.\.$", "=placeholder.pth", word) for word in words]


# --- the quick start -------------------------------------------------------------------------


def quick_start_commands() -> tuple[list[list[str]], list[list[str]]]:
    install, test = code_blocks(section("Quick start"))[:2]
    return shell_commands(install), shell_commands(test)


def test_quick_start_installs_the_cpu_torch_before_reidnet_inside_its_virtual_environment():
    """The regression this guards: the CPU wheels must come before `pip install -e .` in the
    block a newcomer copies; after it, pip keeps the CUDA wheels it already pulled."""
    install, _ = quick_start_commands()
    names = [" ".join(words[:3]) for words in install]
    venv = names.index("python3 -m venv")
    activate = names.index(". " + install[venv][3] + "/bin/activate")  # the venv just made
    cpu_wheels = next(i for i, w in enumerate(install) if "--index-url" in w)
    reidnet = install.index(["pip", "install", "-e", "."])
    assert venv < activate < cpu_wheels < reidnet, install
    words = install[cpu_wheels]
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    # it installs every PyTorch package reidnet depends on, so `pip install -e .` adds none
    torch_dependencies = {
        re.split(r"[<>=\[ ;]", requirement)[0]
        for requirement in pyproject()["project"]["dependencies"]
        if requirement.startswith("torch")
    }
    packages = words[2 : words.index("--index-url")]
    assert set(packages) == torch_dependencies == {"torch", "torchvision"}


def test_quick_start_runs_the_installed_reidnet_command_and_writes_where_the_readme_says():
    install, _ = quick_start_commands()
    assert install[-1] == ["reidnet", "quickstart"]
    assert pyproject()["project"]["scripts"]["reidnet"] == "reidnet.cli:main"
    calls = parse_with_the_cli(install[-1][1:])
    assert calls[-1][0] == "reidnet quickstart"
    # "the summary lists every file it made under `quickstart_out/`"
    (folder,) = re.findall(r"every file it made under `([^`]+)/`", section("Quick start"))
    assert calls[-1][1]["out"] == Path(folder)


def ci_commands() -> list[list[str]]:
    return [words for words in shell_commands(CI_SCRIPT) if words]


def pytest_arguments(words: list[str]) -> list[str] | None:
    if words[:1] == ["pytest"]:
        return words[1:]
    if words[:3] == ["python", "-m", "pytest"]:
        return words[3:]
    return None


def test_the_readme_test_commands_are_the_ones_ci_runs_with_the_extras_ci_installs():
    _, test = quick_start_commands()
    install, run = test
    assert pytest_arguments(run) is not None, run
    # CI runs the README's command (the fast set), then the slow set the README names
    readme_runs = [run[1:]] + [
        pytest_arguments(shlex.split(span))
        for span in code_spans(README)
        if pytest_arguments(shlex.split(span))
    ]
    ci_runs = [pytest_arguments(words) for words in ci_commands()]
    ci_runs = [arguments for arguments in ci_runs if arguments is not None]
    assert ["-q", "-m", "slow"] in readme_runs
    assert ci_runs[: len(readme_runs)] == readme_runs, (readme_runs, ci_runs)
    # the extras the README installs are among those CI installs, and exist
    (readme_extras,) = re.findall(r"^\.\[(.*)\]$", install[-1])
    (ci_install,) = [w for w in ci_commands() if w[:4] == ["python", "-m", "pip", "install"]]
    (ci_extras,) = [re.findall(r"^\.\[(.*)\]$", w)[0] for w in ci_install if w.startswith(".[")]
    assert set(readme_extras.split(",")) <= set(ci_extras.split(","))
    assert set(ci_extras.split(",")) <= set(pyproject()["project"]["optional-dependencies"])
    assert "pytest" in {
        re.split(r"[<>=\[ ]", r)[0] for r in pyproject()["project"]["optional-dependencies"]["dev"]
    }


KINDS_OF_TESTS = """
import pytest


@pytest.mark.slow
def test_end_to_end():
    pass


def test_unit():
    pass
"""


def collected(tmp_path: Path, *pytest_args: str) -> set[str]:
    """The tests `pytest <args>` would run of a file with one slow and one plain test, under
    the repository's own pytest settings (pyproject.toml's addopts and markers)."""
    (tmp_path / "test_kinds.py").write_text(KINDS_OF_TESTS)
    settings = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
    collect = ["--collect-only", "-p", "no:cacheprovider", *pytest_args, "test_kinds.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *settings, *collect],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # the settings, no plugins
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split("::")[1] for line in done.stdout.splitlines() if "::" in line}


def test_the_readme_test_command_leaves_out_the_slow_tests_and_its_slow_command_runs_them(
    tmp_path,
):
    """`pytest -q` deselects the marker `slow` (pyproject's addopts) and `pytest -q -m slow`
    selects exactly those: the last -m wins."""
    _, (_, run) = quick_start_commands()
    (slow_command,) = [s for s in code_spans(README) if s.startswith("pytest ") and "slow" in s]
    assert collected(tmp_path, *pytest_arguments(run)) == {"test_unit"}
    assert collected(tmp_path, *pytest_arguments(shlex.split(slow_command))) == {"test_end_to_end"}


# --- the commands and spec keys the README names -------------------------------------------


def test_every_reidnet_command_in_the_readme_parses_as_the_cli_would_run_it():
    """Command lines (the blocks) parse completely; an inline `reidnet dataset synth` in a
    sentence names a command, so only a missing argument is allowed there."""
    complete = readme_reidnet_commands(inline=False)
    assert len(complete) >= 15, complete  # the tour, the service, the recipes
    for arguments in readme_reidnet_commands():
        try:
            calls = parse_with_the_cli(arguments)
        except Exception as error:
            if arguments in complete or type(error).__name__ != "MissingParameter":
                pytest.fail(f"reidnet {shlex.join(arguments)}: {error}")
            continue
        assert len(calls) >= 2, arguments  # the root and a command ran: no bare group help


def test_every_spec_override_in_the_readme_is_accepted_with_its_value():
    from reidnet.config import load_spec

    overridden = [spec_overrides(arguments) for arguments in readme_reidnet_commands()]
    overridden += [
        spec_overrides([span])
        for span in code_spans(README)
        if " " not in span  # inline
    ]
    overridden += [  # `key: value` inline, as a spec file writes it
        [span.replace(": ", "=")]
        for span in code_spans(README)
        if re.fullmatch(rf"({'|'.join(SPEC_SECTIONS)})\.[\w.]+: \S+", span)
    ]
    overridden = [words for words in overridden if words]
    assert len(overridden) >= 12, overridden
    for overrides in overridden:  # one command's overrides together (num_gpus with gpu_ids)
        load_spec(data={}, overrides=overrides)


def test_every_spec_key_the_readme_names_exists():
    """A bare `section.key` is a key of the resolved default spec, or of a TAO spec file (the
    legacy keys the README says load unchanged)."""
    from reidnet.config import load_spec

    tao_spec = ROOT / "tests" / "data" / "tao_reid_train_spec.yaml"
    known = [load_spec(data={}).model_dump(), yaml.safe_load(tao_spec.read_text())]
    load_spec(tao_spec)  # which loads

    def exists(key: str) -> bool:
        for tree in known:
            node = tree
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return True
        return False

    keys = {
        span
        for span in code_spans(README)
        if re.fullmatch(rf"({'|'.join(SPEC_SECTIONS)})(\.\w+)+", span)
    }
    assert len(keys) >= 8, keys
    assert [key for key in sorted(keys) if not exists(key)] == []


def test_the_readme_yaml_example_is_a_valid_dataset_section():
    from reidnet.config import load_spec

    (example,) = code_blocks(README, "yaml")
    spec = load_spec(data=yaml.safe_load(example))
    entries = spec.model_dump()["dataset"]["train_dataset_dir"]
    assert [(entry["path"], entry["source"]) for entry in entries] == [
        ("/data/market1501/bounding_box_train", "real"),  # untagged: `real`, as the README says
        ("/data/synthetic/bounding_box_train", "synthetic"),
    ]


# --- paths, links and scripts ----------------------------------------------------------------


def test_every_repository_path_and_link_in_the_readme_exists():
    linked = re.findall(r"\]\(([^)#\s:]+)(?:#([^)\s]+))?\)", README)
    assert linked
    for path, anchor in linked:
        target = ROOT / path
        assert target.is_file(), path
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (path, anchor)
    folders = "|".join(("benchmarks", "configs", "docs", "notebooks", "tests", "tools"))
    named = re.findall(rf"(?<![\w/.~-])((?:{folders})/[\w./-]*\w)", README)
    assert len(named) >= 8, named
    for path in named:
        assert (ROOT / path).exists(), path


def test_the_accuracy_benchmark_takes_the_options_the_readme_gives_it():
    import importlib.util

    (span,) = [s for s in code_spans(README) if s.startswith("benchmarks/accuracy_cuhk03.py ")]
    script, *options = span.split()
    loader = importlib.util.spec_from_file_location("accuracy_cuhk03", ROOT / script)
    benchmark = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(benchmark)
    parsed = benchmark.parse_args(options)  # argparse exits on an unknown option or preset
    assert (parsed.preset, parsed.out) == ("cpu", Path("DIR"))


# --- the Market-1501 recipe's ImageNet weights ----------------------------------------------


def test_the_recipe_weights_are_the_file_and_cache_folder_reidnet_looks_for(
    synthetic, tmp_path, monkeypatch
):
    """The README names a file, its URL and torchvision's cache folder; a training run of the
    recipe without weights names the same file, under the same folder, and downloads nothing."""
    import torchvision

    from reidnet.config import load_spec
    from reidnet.errors import ReidnetError
    from reidnet.training.trainer import TrainingRun

    paragraph = README.split("* `configs/market1501_resnet50.yaml`", 1)[1].split("\n* ", 1)[0]
    (url,) = re.findall(r"https://\S+\.pth", paragraph)
    assert url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    file_name = url.rsplit("/", 1)[1]
    assert f"`{file_name}`" in paragraph
    (cache,) = re.findall(r"`(~/[^`]+/)`", paragraph)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    data = {"train": "bounding_box_train", "test": "bounding_box_test", "query": "query"}
    spec = load_spec(
        ROOT / "configs" / "market1501_resnet50.yaml",
        [f"results_dir={tmp_path / 'results'}"]
        + [f"dataset.{key}_dataset_dir={synthetic / folder}" for key, folder in data.items()],
    )
    with pytest.raises(ReidnetError) as missing:
        TrainingRun(spec)
    expected = Path(cache.replace("~", str(home), 1)) / file_name
    assert f"expected {file_name} at {expected}" in str(missing.value)
    assert not expected.exists()  # nothing downloaded


# --- notebooks -------------------------------------------------------------------------------


def test_the_notebooks_the_readme_runs_exist_read_its_variables_and_their_extra_has_jupyter():
    paragraph = README.split("**Notebooks**", 1)[1].split("\n\n", 1)[0]
    (extra,) = re.findall(r'pip install -e "\.\[(\w+)\]"', paragraph)
    requirements = pyproject()["project"]["optional-dependencies"][extra]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in requirements}
    assert {"jupyterlab", "ipykernel"} <= names  # `jupyter lab` and a kernel to run them
    notebooks = {Path(p).name for p in re.findall(r"[\w/]+\.ipynb", paragraph)}
    assert notebooks == {"finetune_cli.ipynb", "finetune_rest_api.ipynb"}
    variables = set(re.findall(r"`(REIDNET_[A-Z]+)", paragraph))
    assert {"REIDNET_QUICK", "REIDNET_DATA", "REIDNET_WORKDIR"} <= variables
    for name in notebooks:
        cells = nbformat.read(ROOT / "notebooks" / name, as_version=4).cells
        code = "\n".join(c.source for c in cells if c.cell_type == "code")
        for variable in variables:
            assert re.search(rf"""environ[^\n]*["']{variable}["']""", code), (name, variable)


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
