"""`reidnet dataset validate`: every problem found, nothing modified, exit code 1 when unusable."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagefiles import make_folder, write_image
from reidnet.cli import app
from reidnet.config import TrainFolder
from reidnet.datatools.validate import validate_dataset

runner = CliRunner()


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def broken_dataset(tmp_path) -> Path:
    root = tmp_path / "broken"
    train = make_folder(
        root / "bounding_box_train",
        [f"0001_c{c}s1_00000{i}_00.jpg" for i, c in enumerate([1, 2, 1, 2])]
        + ["0002_c1s1_000010_00.jpg", "IMG_2024.jpg"],  # identity 2 has one image; a bad name
    )
    (train / "0003_c1s1_000011_00.jpg").write_bytes(b"")  # zero-byte file
    good = (train / "0001_c1s1_000000_00.jpg").read_bytes()
    (train / "0004_c1s1_000012_00.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (train / "0001_c2s1_000099_00.jpg").write_bytes(good)  # byte-identical duplicate
    (train / "labels.csv").write_text("pid,camera\n")
    make_folder(
        root / "bounding_box_test",
        ["0010_c1s1_000001_00.jpg", "0011_c2s1_000001_00.jpg", "0000_c1s1_000002_00.jpg"],
    )
    make_folder(
        root / "query",
        ["0010_c1s1_000003_00.jpg", "0012_c1s1_000003_00.jpg"],  # 10: same camera only; 12: absent
    )
    return root


def test_each_problem_is_reported(broken_dataset):
    report = validate_dataset(
        [TrainFolder(path=str(broken_dataset / "bounding_box_train"))],
        broken_dataset / "bounding_box_test",
        broken_dataset / "query",
        num_instances=4,
    )
    codes = report.codes()
    assert {
        "empty_file",
        "corrupt_image",
        "unparseable_name",
        "non_image_file",
        "duplicate_images",
        "few_images_per_identity",
        "query_identity_not_in_gallery",
        "query_same_camera_only",
        "no_valid_query",
    } <= codes
    by_code = {f.code: f for f in report.findings}
    assert [Path(p).name for p in by_code["empty_file"].paths] == ["0003_c1s1_000011_00.jpg"]
    assert [Path(p).name for p in by_code["corrupt_image"].paths] == ["0004_c1s1_000012_00.jpg"]
    assert [Path(p).name for p in by_code["unparseable_name"].paths] == ["IMG_2024.jpg"]
    assert sorted(Path(p).name for p in by_code["duplicate_images"].paths) == [
        "0001_c1s1_000000_00.jpg",
        "0001_c2s1_000099_00.jpg",
    ]
    assert [Path(p).name for p in by_code["query_same_camera_only"].paths] == [
        "0010_c1s1_000003_00.jpg"
    ]
    assert [Path(p).name for p in by_code["query_identity_not_in_gallery"].paths] == [
        "0012_c1s1_000003_00.jpg"
    ]
    assert "same_camera_filter=false" in by_code["no_valid_query"].message
    assert not report.ok


def test_cli_exits_1_and_never_modifies_the_dataset(broken_dataset):
    before = _tree_digest(broken_dataset)
    result = runner.invoke(app, ["dataset", "validate", str(broken_dataset), "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.output)
    assert payload["ok"] is False
    assert "corrupt_image" in {f["code"] for f in payload["findings"]}
    assert _tree_digest(broken_dataset) == before


def test_clean_dataset_passes_with_exit_0(tmp_path):
    root = tmp_path / "clean"
    make_folder(
        root / "bounding_box_train",
        [f"{pid:04d}_c{c}s1_{i:06d}_00.jpg" for pid in (1, 2) for i, c in enumerate([1, 2, 1, 2])],
    )
    make_folder(root / "bounding_box_test", ["0010_c2s1_000001_00.jpg", "0000_c1s1_0_00.jpg"])
    make_folder(root / "query", ["0010_c1s1_000002_00.jpg"])
    result = runner.invoke(app, ["dataset", "validate", str(root), "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def test_too_few_identities_for_one_batch_is_an_error(tmp_path):
    train = make_folder(tmp_path / "t", [f"0001_c1s1_{i:06d}_00.jpg" for i in range(4)])
    report = validate_dataset([train], num_instances=4, batch_size=16)
    finding = next(f for f in report.findings if f.code == "too_few_identities")
    assert "training has 1 identities but one batch needs 4" in finding.message


def test_single_camera_data_passes_without_same_camera_filter(tmp_path):
    gallery = make_folder(tmp_path / "g", ["0001_c1s1_000001_00.jpg"])
    query = make_folder(tmp_path / "q", ["0001_c1s1_000002_00.jpg"])
    assert not validate_dataset(test_dir=gallery, query_dir=query).ok
    assert validate_dataset(test_dir=gallery, query_dir=query, same_camera_filter=False).ok


def test_missing_folder_is_an_error(tmp_path):
    write_image(tmp_path / "q" / "0001_c1s1_0_00.jpg")
    report = validate_dataset(test_dir=tmp_path / "nope", query_dir=tmp_path / "q")
    assert "missing_folder" in report.codes()
    assert not report.ok


def test_a_file_that_is_no_image_is_named_without_internals(tmp_path):
    from reidnet.datatools.validate import _inspect_image

    garbage = tmp_path / "0001_c1s1_000001_00.jpg"
    garbage.write_bytes(b"this is not an image at all" * 10)
    problem, digest = _inspect_image(garbage)
    assert digest is None and problem.startswith("not an image PIL can read")
    assert "BytesIO" not in problem  # PIL's message names its in-memory buffer


def test_a_missing_train_folder_does_not_shift_the_identity_groups(tmp_path):
    """Two folders sharing one identity group hold 2 identities, also when a folder listed
    before them is missing (its group must not pass to the next folder)."""
    names = ["0001_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg"]
    make_folder(tmp_path / "cam_a", names)
    make_folder(tmp_path / "cam_b", names)
    folders = [
        TrainFolder(path=str(tmp_path / "missing"), identity_group="other"),
        TrainFolder(path=str(tmp_path / "cam_a"), identity_group="site"),
        TrainFolder(path=str(tmp_path / "cam_b"), identity_group="site"),
    ]
    report = validate_dataset(folders, num_instances=4)
    assert "missing_folder" in report.codes()
    few = [f.message for f in report.findings if f.code == "few_images_per_identity"]
    assert few and few[0].startswith("2 of 2 training identities"), few
