"""The quick start runs its whole tour and lists every file it made."""

from reidnet.quickstart import run_quickstart


def test_quickstart_makes_every_artifact_it_lists(tmp_path):
    tiny = [
        "train.num_epochs=1",
        "model.input_height=32",
        "model.input_width=16",
        "dataset.num_workers=0",
    ]
    summary = run_quickstart(tmp_path / "qs", tiny)
    for name, path in summary.paths.items():
        assert path.exists(), name
    for metrics in (summary.untrained, summary.trained):
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert metrics["num_valid_queries"] > 0
    assert summary.paths["checkpoint"].name == "model_epoch_001.pth"

    # A second tour in the same folder starts again from an untrained model: before, it resumed
    # the finished run, scored the trained weights as "untrained" and trained for 0 s.
    again = run_quickstart(tmp_path / "qs", tiny)
    assert again.untrained["mAP"] == summary.untrained["mAP"]
    assert again.untrained["mAP"] != summary.trained["mAP"]
    assert again.trained["mAP"] == summary.trained["mAP"]  # seeded: the same run again
    assert (tmp_path / "qs" / "results" / "train" / "train.log").is_file()
