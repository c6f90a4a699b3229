"""The quick start runs its whole tour, lists every file it made, and its short training run
scores better than the untrained network it starts from."""

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
        assert metrics["num_valid_queries"] > 0
    # Both scores are of the same queries and gallery: one epoch (30 steps, seeded) lifts mAP from
    # about 0.04 to about 0.06 and rank-1 from about 0.03 to about 0.08.
    assert summary.trained["num_valid_queries"] == summary.untrained["num_valid_queries"]
    assert summary.trained["mAP"] > summary.untrained["mAP"], (summary.untrained, summary.trained)
    assert summary.trained["rank-1"] > summary.untrained["rank-1"]
    assert summary.paths["checkpoint"].name == "model_epoch_001.pth"
    # Only the checkpoints it lists: the resume state (three times the weights) is not kept.
    kept = sorted(p.name for p in (tmp_path / "qs" / "results" / "train").glob("*.pth"))
    assert kept == ["model_epoch_001.pth", "reid_model_best.pth"]

    # A second tour in the same folder starts again from an untrained model: before, it resumed
    # the finished run, scored the trained weights as "untrained" and trained for 0 s.
    again = run_quickstart(tmp_path / "qs", tiny)
    assert again.untrained["mAP"] == summary.untrained["mAP"]
    assert again.untrained["mAP"] != summary.trained["mAP"]
    assert again.trained["mAP"] == summary.trained["mAP"]  # seeded: the same run again
    assert (tmp_path / "qs" / "results" / "train" / "train.log").is_file()
