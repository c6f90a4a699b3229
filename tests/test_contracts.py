"""reidnet.contracts: the checkpoint's Architecture, status.json and the shared file names, each
checked against values written out by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

import reidnet
from reidnet.config import ACTIONS, load_spec
from reidnet.contracts import (
    ARCHITECTURE_FIELDS,
    Architecture,
    TrainingStatus,
    action_dir,
    default_onnx_file,
    epoch_checkpoint_name,
    epoch_checkpoints,
    job_file,
    latest_checkpoint,
    losses_of,
)
from reidnet.errors import ReidnetError

# What `reidnet train` stores under checkpoint["architecture"] for a resnet_18 at 32x16.
STORED = {
    "backbone": "resnet_18",
    "network": "torchvision",
    "feat_dim": 64,
    "last_stride": 1,
    "neck": "bnneck",
    "neck_feat": "after",
    "with_flip_feature": True,
    "input_height": 32,
    "input_width": 16,
    "pixel_mean": [0.5, 0.4, 0.3],
    "pixel_std": [0.25, 0.25, 0.25],
}


# --- Architecture -----------------------------------------------------------------------------


def test_the_stored_architecture_reads_as_typed_fields_and_writes_back_unchanged():
    architecture = Architecture.from_checkpoint({"architecture": STORED}, "m.pth")
    assert architecture.backbone == "resnet_18" and architecture.feat_dim == 64
    assert architecture.input_size == (32, 16)
    assert architecture.pixel_mean == (0.5, 0.4, 0.3)  # a tuple: the model is frozen
    assert architecture.to_dict() == STORED
    assert Architecture.from_dict(architecture.to_dict()) == architecture
    shape = ("backbone", "network", "feat_dim", "last_stride", "neck", "neck_feat")
    assert shape == ARCHITECTURE_FIELDS
    assert architecture.network_fields() == {key: STORED[key] for key in shape}
    with pytest.raises(ValidationError, match="frozen"):
        architecture.feat_dim = 128  # type: ignore[misc]


def test_the_architecture_of_a_spec_is_what_its_checkpoints_store():
    spec = load_spec(
        data={
            "model": {
                "backbone": "resnet_18",
                "feat_dim": 64,
                "input_height": 32,
                "input_width": 16,
                "with_flip_feature": True,
            },
            "dataset": {"pixel_mean": [0.5, 0.4, 0.3], "pixel_std": [0.25, 0.25, 0.25]},
        }
    )
    assert Architecture.from_spec(spec).to_dict() == STORED


def test_a_checkpoint_from_before_the_network_field_was_torchvision():
    older = {key: value for key, value in STORED.items() if key != "network"}
    assert Architecture.from_dict(older).network == "torchvision"


def test_missing_and_unknown_fields_are_named_with_the_file():
    partial = {key: value for key, value in STORED.items() if key not in ("feat_dim", "neck")}
    with pytest.raises(ReidnetError) as caught:
        Architecture.from_dict(partial, Path("runs/model_epoch_003.pth"))
    message = str(caught.value)
    assert message.startswith("runs/model_epoch_003.pth: its architecture has missing ")
    assert "missing feat_dim, neck" in message
    with pytest.raises(ReidnetError, match=r"m\.pth: its architecture has unknown depth"):
        Architecture.from_dict({**STORED, "depth": 50}, "m.pth")
    with pytest.raises(ReidnetError, match=r"m\.pth has no 'architecture' entry"):
        Architecture.from_checkpoint({"model": {}}, "m.pth")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("feat_dim", "64", "a positive integer"),
        ("feat_dim", True, "a positive integer"),
        ("feat_dim", 0, "a positive integer"),
        ("backbone", 18, "one of resnet_18, "),
        ("backbone", "resnet_42", "one of resnet_18, "),
        ("network", "timm", "one of torchvision, tao"),
        ("last_stride", 3, "one of 1, 2"),
        ("last_stride", True, "one of 1, 2"),
        ("neck", "bn", "one of bnneck, no"),
        ("neck_feat", "middle", "one of after, before"),
        ("with_flip_feature", 1, "true or false"),
        ("pixel_std", "0.25", "a list of numbers"),
        ("pixel_mean", [0.5, None, 0.3], "a list of numbers"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused(field, value, expected):
    with pytest.raises(ReidnetError, match=f"field {field} is .*, expected {expected}"):
        Architecture.from_dict({**STORED, field: value}, "m.pth")


def test_a_checkpoint_with_a_damaged_architecture_fails_when_it_loads(tmp_path):
    torch = pytest.importorskip("torch")
    from reidnet.contracts import checkpoint_header
    from reidnet.runtime import checkpoint as ckpt

    spec = load_spec(data={"model": {"backbone": "resnet_18", "feat_dim": 64}})
    header = checkpoint_header(
        epoch=1, spec_dict={}, identity_keys=["a"], architecture=Architecture.from_spec(spec)
    )
    del header["architecture"]["neck_feat"]
    path = tmp_path / "damaged.pth"
    torch.save({**header, "model": {}}, path)
    with pytest.raises(ReidnetError, match=r"damaged\.pth: its architecture has missing neck_feat"):
        ckpt.load_checkpoint(path)


def test_the_onnx_metadata_is_the_architecture_as_strings_and_reads_back():
    architecture = Architecture.from_dict(STORED)
    metadata = architecture.onnx_metadata(num_classes=5)
    written = {  # what an ONNX consumer reads: text as is, numbers, booleans and lists as JSON
        "reidnet_version": reidnet.__version__,
        "backbone": "resnet_18",
        "network": "torchvision",
        "feat_dim": "64",
        "last_stride": "1",
        "neck": "bnneck",
        "neck_feat": "after",
        "with_flip_feature": "true",
        "input_height": "32",
        "input_width": "16",
        "pixel_mean": "[0.5, 0.4, 0.3]",
        "pixel_std": "[0.25, 0.25, 0.25]",
        "color_order": "RGB",
        "l2_normalized": "false",
        "num_classes": "5",
    }
    assert {key: metadata[key] for key in written} == written
    assert Architecture.from_onnx_metadata(metadata, "m.onnx") == architecture
    assert Architecture.from_onnx_metadata({"producer": "someone else"}, "m.onnx") is None


def test_onnx_metadata_of_older_exports_and_damaged_entries():
    older = {  # an export from before last_stride, neck and network were recorded
        "reidnet_version": "0.1.0",
        "backbone": "resnet_50",
        "feat_dim": "256",
        "neck_feat": "after",
        "with_flip_feature": "false",
        "input_height": "256",
        "input_width": "128",
        "pixel_mean": "[0.485, 0.456, 0.406]",
        "pixel_std": "[0.226, 0.226, 0.226]",
    }
    read = Architecture.from_onnx_metadata(older, "old.onnx")
    assert (read.input_size, read.feat_dim, read.network) == ((256, 128), 256, "torchvision")
    with pytest.raises(ReidnetError, match=r"bad\.onnx carries reidnet metadata but its pixel_std"):
        Architecture.from_onnx_metadata({**older, "pixel_std": "[0.2, "}, "bad.onnx")
    with pytest.raises(ReidnetError, match=r"bad\.onnx: architecture field feat_dim .*export it"):
        Architecture.from_onnx_metadata({**older, "feat_dim": "-3"}, "bad.onnx")


# --- status.json ------------------------------------------------------------------------------

RECORD = {  # one per-epoch record, as metrics.jsonl holds it
    "epoch": 3,
    "steps": 12,
    "lr": 0.00035,
    "images_per_second": 250.0,
    "seconds": 40.0,
    "loss_id": 2.5,
    "loss_triplet": 0.25,
    "loss_total": 2.75,
    "train_accuracy": 0.5,
    "validation": {"mAP": 0.4, "rank-1": 0.6},
}


def test_the_status_after_an_epoch_carries_its_figures():
    status = TrainingStatus.after_epoch("running", 3, 10, RECORD, {"mAP": 0.4}, Path("c.pth"))
    assert status.losses == {"id": 2.5, "triplet": 0.25, "total": 2.75}
    assert (status.lr, status.train_accuracy, status.images_per_second) == (0.00035, 0.5, 250.0)
    assert status.eta_seconds == 280.0  # 7 epochs left at 40 s each
    assert status.checkpoint == "c.pth" and status.validation == {"mAP": 0.4}
    assert "validation" not in status.latest and status.latest["steps"] == 12
    written = json.loads(status.to_json())
    assert written["losses"] == {"id": 2.5, "triplet": 0.25, "total": 2.75}
    assert TrainingStatus.model_validate(written) == status
    progress = status.progress()
    assert (progress.epoch, progress.num_epochs, progress.eta_seconds) == (3, 10, 280.0)
    assert not hasattr(progress, "state")


def test_a_status_written_before_its_figures_had_their_own_keys_still_reads(tmp_path):
    """Files of earlier versions held the losses only inside `latest`, as loss_* keys."""
    path = tmp_path / "status.json"
    path.write_text(
        json.dumps(
            {
                "state": "done",
                "epoch": 2,
                "num_epochs": 2,
                "latest": {"epoch": 2, "loss_total": 1.5, "lr": 0.1, "train_accuracy": 0.75},
                "validation": None,
                "eta_seconds": 0.0,
                "checkpoint": None,
                "updated": 1700000000.0,
            }
        )
    )
    status = TrainingStatus.read(path)
    assert status.losses == {"total": 1.5}
    assert (status.lr, status.train_accuracy, status.images_per_second) == (0.1, 0.75, None)


def test_a_missing_status_is_none_and_a_foreign_one_names_the_file(tmp_path):
    assert TrainingStatus.read(tmp_path / "status.json") is None
    (tmp_path / "status.json").write_text('{"state": "paused", "epoch": 1}')
    with pytest.raises(ReidnetError, match=r"status\.json is not a reidnet training status"):
        TrainingStatus.read(tmp_path / "status.json")


def test_losses_of_a_record_are_its_loss_terms():
    assert losses_of(RECORD) == {"id": 2.5, "triplet": 0.25, "total": 2.75}
    assert losses_of({"lr": 0.1}) == {}


def test_the_service_shows_a_train_jobs_status_as_its_progress(tmp_path):
    from reidnet.service.reporting import job_progress, job_result
    from reidnet.service.schemas import JobProgress

    validation = {"mAP": 0.4, "rank-1": 0.6, "cmc": [0.6, 0.7]}
    status = TrainingStatus.after_epoch("done", 3, 3, RECORD, validation, None)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "status.json").write_text(status.to_json())
    progress = job_progress(tmp_path, "train")
    assert isinstance(progress, JobProgress)
    assert progress.losses == {"id": 2.5, "triplet": 0.25, "total": 2.75}
    assert progress.validation == {"mAP": 0.4, "rank-1": 0.6}  # the CMC curve is left out
    assert (progress.epoch, progress.eta_seconds) == (3, 0.0)
    assert job_result(tmp_path, "train") == {
        "epochs_completed": 3,
        "checkpoint": None,
        "mAP": 0.4,
        "rank-1": 0.6,
    }
    (tmp_path / "train" / "status.json").write_text("{}")  # damaged: no progress, no failure
    assert job_progress(tmp_path, "train") is None
    assert job_progress(tmp_path, "evaluate") is None


# --- file names -------------------------------------------------------------------------------


def test_file_names():
    assert epoch_checkpoint_name(7) == "model_epoch_007.pth"
    assert epoch_checkpoint_name(1234) == "model_epoch_1234.pth"
    assert default_onnx_file("runs/a") == Path("runs/a/export/reid_model.onnx")
    assert action_dir("runs/a", "train") == Path("runs/a/train")
    assert job_file("train", "metrics.jsonl") == "train/metrics.jsonl"


def test_epoch_checkpoints_are_listed_by_epoch_not_by_name(tmp_path):
    for name in (
        "model_epoch_1000.pth",  # sorts before model_epoch_999.pth as text
        "model_epoch_999.pth",
        "model_epoch_002.pth",
        "model_epoch_002.pth.tmp",
        "model_epoch_7.pth",  # not a name the trainer writes
        "reid_model_latest.pth",
    ):
        (tmp_path / name).write_bytes(b"")
    found = [path.name for path in epoch_checkpoints(tmp_path)]
    assert found == ["model_epoch_002.pth", "model_epoch_999.pth", "model_epoch_1000.pth"]
    assert epoch_checkpoints(tmp_path / "absent") == []


def test_the_latest_checkpoint_is_the_latest_link_else_the_newest_epoch(tmp_path):
    assert latest_checkpoint(tmp_path) is None  # before the first checkpoint
    for name in ("model_epoch_002.pth", "model_epoch_010.pth", "reid_model_best.pth"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "model_epoch_010.pth"  # the link is missing
    (tmp_path / "reid_model_latest.pth").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "reid_model_latest.pth"


def test_the_service_spec_and_the_export_action_agree_on_the_onnx_file(tmp_path):
    from reidnet.actions import export_target
    from reidnet.service.specs import JobPaths, resolved_spec

    job = tmp_path / "jobs" / "j1"
    spec = resolved_spec("export", {}, JobPaths(job, [], checkpoint="c.pth"))
    assert spec["export"]["onnx_file"] == str(job / "export" / "reid_model.onnx")
    plain = load_spec(data={"results_dir": str(job)})
    assert export_target(plain) == job / "export" / "reid_model.onnx"


# --- the actions on the package ---------------------------------------------------------------


def test_the_actions_are_the_packages_and_the_services():
    from reidnet import actions
    from reidnet.config import ExperimentSpec
    from reidnet.service.schemas import Action

    assert ACTIONS == ("train", "evaluate", "inference", "export")  # TAO's, as the CLI names them
    assert typing.get_args(Action) == ACTIONS
    assert set(ACTIONS) <= set(reidnet.__all__)
    for name in ACTIONS:
        assert getattr(reidnet, name) is getattr(actions, name)
        assert name in ExperimentSpec.model_fields  # each has its section of the spec
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        _ = reidnet.evaluat


def test_contracts_the_client_and_the_service_schemas_do_not_import_torch():
    code = (
        "import sys, reidnet, reidnet.contracts, reidnet.client, reidnet.service.schemas; "
        "print(sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
