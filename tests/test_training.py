"""Training end to end on tiny synthetic data: learning, resume, growth, actions, bad input.

One 8-epoch run (the module's `trained` fixture) is trained once: one test per output checks
what it wrote (learning, checkpoints, best epoch, log, metrics, status, curves, TensorBoard, a
re-run that trains nothing), and the checkpoint, evaluate, inference and default-spec tests read
its checkpoint and write into results folders of their own. Tests that need a run of another
shape (resume, growth, pruning, center loss) train their own.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reidnet.actions import evaluate, inference, train
from reidnet.config import ExperimentSpec, load_spec
from reidnet.contracts import Architecture, TrainingStatus
from reidnet.data.market import ImageRecord, read_records
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.retrieval import score_model
from reidnet.training.trainer import TrainingRun, TrainResult
from tiny_training import chance_map, query_and_gallery, tiny_spec


@dataclass(frozen=True)
class TrainedRun:
    spec: ExperimentSpec
    untrained: dict[str, Any]  # the network's metrics before its first step
    result: TrainResult

    @property
    def checkpoint(self) -> Path:
        return self.result.last_checkpoint


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory) -> TrainedRun:
    """8 epochs of TINY (checkpoints and validation every 4), scored before training too.

    Tests only read its files; the re-run of the finished run only appends to its train.log
    (and rewrites the run record), which no other test depends on."""
    spec = tiny_spec(
        synthetic,
        tmp_path_factory.mktemp("trained") / "r",
        "train.num_epochs=8",
        "train.checkpoint_interval=4",
        "train.validation_interval=4",
    )
    run = TrainingRun(spec)
    try:
        untrained = score_model(
            run.model,
            Architecture.from_spec(spec),
            run.query_records,
            run.gallery_records,
            spec,
            run.device,
        ).metrics
        result = run.fit()
    finally:
        run.close()
    return TrainedRun(spec, untrained, result)


def textbook_map(
    query: list[tuple[ImageRecord, np.ndarray]], gallery: list[tuple[ImageRecord, np.ndarray]]
) -> float:
    """Standard mAP of (record, embedding) pairs: cosine similarity, the same-camera rule, and
    the mean precision at each true match, one query at a time."""
    precisions_per_query = []
    for record, feature in query:
        similarity = [
            float(np.dot(feature, g) / (np.linalg.norm(feature) * np.linalg.norm(g)))
            for _, g in gallery
        ]
        ranked = [gallery[j][0] for j in np.argsort(similarity)[::-1]]
        ranked = [g for g in ranked if not (g.pid == record.pid and g.camid == record.camid)]
        hits = [g.pid == record.pid for g in ranked]
        if not any(hits):
            continue
        precisions = [sum(hits[: k + 1]) / (k + 1) for k, hit in enumerate(hits) if hit]
        precisions_per_query.append(sum(precisions) / len(precisions))
    return sum(precisions_per_query) / len(precisions_per_query)


def train_folder(run: TrainedRun) -> Path:
    return Path(run.spec.results_dir) / "train"


def metrics_lines(run: TrainedRun) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (train_folder(run) / "metrics.jsonl").read_text().splitlines()
    ]


def test_training_beats_the_untrained_model(trained):
    untrained, trained_metrics = trained.untrained, trained.result.final_metrics
    assert trained_metrics["mAP"] > untrained["mAP"] + 0.1, (untrained, trained_metrics)


def test_training_keeps_the_interval_checkpoints_and_latest_and_best(trained):
    assert sorted(p.name for p in train_folder(trained).glob("*.pth")) == [
        "model_epoch_004.pth",
        "model_epoch_008.pth",
        "reid_model_best.pth",
        "reid_model_latest.pth",
    ]


def test_best_checkpoint_is_the_epoch_with_the_highest_validation_map(trained):
    history = trained.result.history
    validated = {h["epoch"]: h["validation"]["mAP"] for h in history if "validation" in h}
    assert sorted(validated) == [4, 8]  # validation_interval 4 of 8 epochs
    best_epoch = max(validated, key=validated.get)
    best = ckpt.load_checkpoint(train_folder(trained) / "reid_model_best.pth")
    assert best["epoch"] == best_epoch


def test_train_log_has_one_unwrapped_line_per_record_with_the_epochs_map(trained):
    log = (train_folder(trained) / "train.log").read_text().splitlines()
    epoch_lines = [line for line in log if "reidnet.training.trainer: epoch 8/8 " in line]
    assert any("mAP=" in line for line in epoch_lines)  # one record per line, never wrapped


def test_a_finished_run_is_not_trained_again(trained):
    again = train(trained.spec)
    assert again.already_complete and again.epochs_completed == 8


def test_metrics_jsonl_has_one_line_per_epoch_with_losses_and_validation_at_its_interval(trained):
    lines = metrics_lines(trained)
    assert [line["epoch"] for line in lines] == list(range(1, 9))
    assert {"loss_id", "loss_triplet", "loss_total", "lr", "train_accuracy"} <= set(lines[0])
    assert "validation" in lines[3] and "validation" not in lines[2]


def test_status_json_says_done_with_the_last_epochs_metrics_and_checkpoint(trained):
    out, last = train_folder(trained), metrics_lines(trained)[-1]
    status = TrainingStatus.read(out / "status.json")  # the service's reading of it
    assert (status.state, status.epoch, status.num_epochs, status.eta_seconds) == ("done", 8, 8, 0)
    assert status.losses == {k[5:]: v for k, v in last.items() if k.startswith("loss_")}
    assert status.lr == last["lr"] and status.validation == last["validation"]
    assert status.checkpoint == str(out / "model_epoch_008.pth")


def test_training_draws_its_curves_as_a_png(trained):
    curves = train_folder(trained) / "training_curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_writes_tensorboard_events(trained):
    assert any((train_folder(trained) / "tensorboard").iterdir())


def test_checkpoint_carries_what_evaluate_needs(trained):
    saved = ckpt.load_checkpoint(trained.checkpoint)
    assert saved["num_classes"] == 16 and len(saved["identity_keys"]) == 16
    assert saved["architecture"]["backbone"] == "resnet_18"
    assert (saved["architecture"]["input_height"], saved["architecture"]["input_width"]) == (32, 16)
    assert saved["architecture"]["pixel_std"] == [0.226, 0.226, 0.226]
    assert {"model", "spec", "epoch", "history"} <= set(saved)
    assert saved["epoch"] == 8 and saved["model"]["classifier.weight"].shape == (16, 64)
    assert [record["epoch"] for record in saved["history"]] == list(range(1, 9))


RESUME_STATE = {"optimizer", "scheduler", "scaler", "rng", "step_in_epoch"}


def test_epoch_checkpoints_hold_the_weights_and_latest_the_resume_state(
    synthetic, trained, tmp_path
):
    out = trained.checkpoint.parent
    weights = ckpt.load_checkpoint(trained.checkpoint)
    latest = ckpt.load_checkpoint(out / "reid_model_latest.pth")
    assert not RESUME_STATE & set(weights)
    assert set(latest) >= RESUME_STATE
    for name, tensor in latest["model"].items():
        assert torch.equal(weights["model"][name], tensor), name
    # Adam keeps two moments of every trained tensor: latest is about three times the weights.
    size = trained.checkpoint.stat().st_size
    assert size < 0.6 * (out / "reid_model_latest.pth").stat().st_size
    # A fine-tune starts from the weights-only file: every tensor but the classifier's rows.
    fine_tune = tiny_spec(
        synthetic,
        tmp_path / "ft",
        "model.pretrain_choice=self",
        f"model.pretrained_model_path={trained.checkpoint}",
    )
    run = TrainingRun(fine_tune)
    try:
        started = run.model.state_dict()
    finally:
        run.close()
    for name, tensor in weights["model"].items():
        if not name.startswith("classifier"):
            assert torch.equal(started[name], tensor), name


def test_resuming_from_a_weights_only_checkpoint_names_latest_and_the_fine_tune(
    synthetic, trained, tmp_path
):
    epoch_4 = trained.checkpoint.parent / "model_epoch_004.pth"
    spec = tiny_spec(synthetic, tmp_path / "r", f"train.resume_training_checkpoint_path={epoch_4}")
    with pytest.raises(ReidnetError) as caught:
        TrainingRun(spec)
    message = str(caught.value)
    assert message.startswith(f"cannot resume from {epoch_4}: it holds the weights only")
    assert "reid_model_latest.pth" in message
    assert f"model.pretrain_choice=self model.pretrained_model_path={epoch_4}" in message


def test_a_num_classes_that_disagrees_with_the_data_is_reported(synthetic, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="reidnet.training.trainer")
    run = TrainingRun(tiny_spec(synthetic, tmp_path / "r", "dataset.num_classes=751"))
    assert run.model.classifier.out_features == 16  # the 16 training identities, not 751
    assert "dataset.num_classes is 751 but the training data has 16 identities" in caplog.text


def test_only_the_newest_checkpoints_are_kept_besides_latest_and_best(synthetic, tmp_path):
    spec = tiny_spec(synthetic, tmp_path / "r", "train.num_epochs=3", "train.keep_checkpoints=1")
    train(spec)
    names = sorted(p.name for p in (tmp_path / "r" / "train").glob("*.pth"))
    assert names == ["model_epoch_003.pth", "reid_model_best.pth", "reid_model_latest.pth"]


def test_resumed_run_continues_exactly_like_an_uninterrupted_one(synthetic, tmp_path):
    straight = train(tiny_spec(synthetic, tmp_path / "a"))
    train(tiny_spec(synthetic, tmp_path / "b", "train.num_epochs=1"))
    resumed = train(tiny_spec(synthetic, tmp_path / "b"))  # picks up reid_model_latest.pth
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for key in ("loss_id", "loss_triplet", "loss_total"):
        assert resumed.history[1][key] == pytest.approx(straight.history[1][key], rel=1e-5)


def test_new_identities_grow_the_classifier_and_keep_old_rows(synthetic, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(synthetic / "bounding_box_train", first)
    extra = tmp_path / "extra"
    extra.mkdir()
    for path in sorted(first.iterdir())[:32]:  # move the first identities to a second folder
        shutil.move(path, extra / path.name)
    group = {"identity_group": "shop"}
    spec_one = tiny_spec(
        synthetic, tmp_path / "r", "train.num_epochs=1", train_dirs=[{"path": str(first), **group}]
    )
    before = ckpt.load_checkpoint(train(spec_one).last_checkpoint)
    both = [{"path": str(first), **group}, {"path": str(extra), **group}]
    after = ckpt.load_checkpoint(
        train(tiny_spec(synthetic, tmp_path / "r", train_dirs=both)).last_checkpoint
    )
    old = before["num_classes"]
    assert after["num_classes"] > old
    assert after["identity_keys"][:old] == before["identity_keys"]
    assert after["epoch"] == 2
    # Rows of identities seen before started from their trained values (then trained one epoch).
    old_rows, new_rows = before["model"]["classifier.weight"], after["model"]["classifier.weight"]
    assert new_rows.shape[0] == after["num_classes"]
    assert torch.nn.functional.cosine_similarity(old_rows, new_rows[:old]).mean() > 0.5


def test_inference_writes_every_image_not_only_the_last_batch(synthetic, trained, tmp_path):
    spec = tiny_spec(
        synthetic,
        tmp_path / "r",
        f"inference.checkpoint={trained.checkpoint}",
        "dataset.val_batch_size=7",
    )
    outcome = inference(spec)
    entries = json.loads(outcome.json_file.read_text())
    expected = sorted(p.name for p in (synthetic / "query").iterdir()) + sorted(
        p.name for p in (synthetic / "bounding_box_test").iterdir()
    )
    assert [Path(e["img_path"]).name for e in entries] == expected
    assert len(expected) > 7  # several batches
    matrix = np.load(outcome.npy_file)
    assert matrix.shape == (len(expected), 64) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix[-1], entries[-1]["embedding"], rtol=1e-6)
    assert len(outcome.index_file.read_text().splitlines()) == len(expected) + 1


def test_evaluate_scores_the_embeddings_inference_writes_as_the_textbook_says(
    synthetic, trained, tmp_path
):
    """evaluate's mAP equals standard mAP computed here, in a plain loop, from the embeddings
    inference writes for the same checkpoint: the same images, identities, cameras and rule."""
    spec = tiny_spec(
        synthetic,
        tmp_path / "r",
        f"evaluate.checkpoint={trained.checkpoint}",
        f"inference.checkpoint={trained.checkpoint}",
    )
    metrics = evaluate(spec).metrics
    entries = json.loads(inference(spec).json_file.read_text())
    embedding = {Path(e["img_path"]): np.asarray(e["embedding"]) for e in entries}
    query, gallery = query_and_gallery(synthetic)
    expected = textbook_map(
        [(r, embedding[Path(r.path)]) for r in query],
        [(r, embedding[Path(r.path)]) for r in gallery],
    )
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-6)
    assert metrics["num_valid_queries"] == len(query)


def test_inference_on_any_folder_of_crops(synthetic, trained, tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, path in enumerate(sorted((synthetic / "query").iterdir())[:3]):
        shutil.copy(path, crops / f"crop_{i}.jpg")
    spec = tiny_spec(synthetic, tmp_path / "r", f"inference.checkpoint={trained.checkpoint}")
    before = inference(spec).count  # every query and gallery image
    with pytest.raises(ReidnetError, match=r"inference would overwrite .*result\.json.*--force"):
        inference(spec, input_dir=crops)  # used to replace the full result without a word
    assert len(json.loads((tmp_path / "r/inference/result.json").read_text())) == before
    outcome = inference(spec, input_dir=crops, force=True)
    assert outcome.count == 3


def test_evaluate_writes_results_and_plots(synthetic, trained, tmp_path, monkeypatch):
    from reidnet.evaluation import plots

    titles = []
    real_plot_cmc = plots.plot_cmc

    def recording_plot_cmc(cmc, path, title=None, **described):
        titles.append(plots.cmc_title(title, cmc[0], **described))
        return real_plot_cmc(cmc, path, title, **described)

    monkeypatch.setattr(plots, "plot_cmc", recording_plot_cmc)
    result = trained.result
    spec = tiny_spec(
        synthetic,
        tmp_path / "r",
        f"evaluate.checkpoint={result.last_checkpoint}",
        "re_ranking.re_ranking=true",
        "re_ranking.k1=5",
        "re_ranking.k2=2",
    )
    outcome = evaluate(spec)
    saved = json.loads(outcome.results_file.read_text())
    assert saved["re_ranking"] is True
    # Random ranking of this gallery scores about 0.16; the trained network about 0.5-0.7.
    query, gallery = query_and_gallery(synthetic)
    assert saved["mAP"] > 2 * chance_map(query, gallery), saved["mAP"]
    cmc = saved["cmc"]
    assert len(cmc) == 50 and cmc == sorted(cmc) and cmc[-1] == 1.0  # every query matched by 50
    assert cmc[0] == saved["rank-1"] and cmc[4] == saved["rank-5"]
    for path in outcome.plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (title,) = titles
    backbone = spec.model.backbone
    assert (
        f"CMC (re-ranked): {backbone} ({result.last_checkpoint.name}) on {synthetic.name}" in title
    )
    assert f"mAP {100 * saved['mAP']:.1f}%, rank-1 {100 * saved['rank-1']:.1f}%" in title
    # which model, input size, epoch and checkpoint it scored, and when
    assert saved["model"]["backbone"] == "resnet_18" and saved["model"]["feat_dim"] == 64
    assert (saved["input_size"], saved["epoch"]) == ([32, 16], 8)
    assert saved["checkpoint"] == str(result.last_checkpoint)
    assert datetime.fromisoformat(saved["evaluated"]).tzinfo is not None
    # the record of the run: resolved spec, log, environment
    out = outcome.results_file.parent
    assert load_spec(out / "resolved_spec.yaml").re_ranking.k1 == 5
    assert "mAP" in (out / "evaluate.log").read_text()
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["action"] == "evaluate"
    with pytest.raises(ReidnetError, match="evaluate would overwrite"):
        evaluate(spec)
    assert evaluate(spec, force=True).metrics == outcome.metrics


def test_dataset_problems_stop_training_before_the_first_step(synthetic, tmp_path):
    broken = tmp_path / "train"
    shutil.copytree(synthetic / "bounding_box_train", broken)
    next(broken.iterdir()).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ReidnetError, match="corrupt_image"):
        TrainingRun(tiny_spec(synthetic, tmp_path / "r", train_dirs=str(broken)))
    assert not (tmp_path / "r").exists()


def test_too_few_identities_for_a_batch_says_how_many_are_needed(synthetic, tmp_path):
    spec = tiny_spec(synthetic, tmp_path / "r", "dataset.batch_size=80")
    with pytest.raises(ReidnetError, match="one batch needs 20"):
        TrainingRun(spec)


def test_default_specs_evaluate_any_checkpoint_which_is_the_truth_for_the_model(
    synthetic, trained, tmp_path, caplog
):
    """The TAO flow: `default-specs` writes every key (model.backbone resnet_50, 256x128, no data
    folders); evaluate, inference and export of a resnet_18 checkpoint still run, with the
    checkpoint's network and data, and one warning per disagreeing value."""
    from reidnet.actions import export
    from reidnet.config import write_default_specs

    result = trained.result
    direct = evaluate(
        tiny_spec(synthetic, tmp_path / "r", f"evaluate.checkpoint={result.last_checkpoint}")
    )
    specs = {p.stem: p for p in write_default_specs(tmp_path / "defaults")}
    caplog.set_level(logging.INFO)
    outcome = evaluate(
        load_spec(specs["evaluate"], [f"evaluate.checkpoint={result.last_checkpoint}"])
    )
    assert outcome.metrics == direct.metrics  # same network, same input size, same data
    warned = caplog.text
    assert "model.backbone is 'resnet_50' in the spec but checkpoint" in warned
    assert "trained with 'resnet_18': using 'resnet_18'" in warned
    assert "model.input_height is 256 in the spec" in warned
    assert "from the spec stored in the checkpoint" in warned
    inferred = inference(
        load_spec(specs["inference"], [f"inference.checkpoint={result.last_checkpoint}"])
    )
    assert inferred.count == len(read_records(synthetic / "query")) + len(
        read_records(synthetic / "bounding_box_test")
    )
    exported = export(load_spec(specs["export"], [f"export.checkpoint={result.last_checkpoint}"]))
    assert exported.metadata["backbone"] == "resnet_18"


def test_missing_checkpoint_path_says_so(synthetic, tmp_path):
    spec = tiny_spec(synthetic, tmp_path / "r", f"evaluate.checkpoint={tmp_path / 'nope.pth'}")
    with pytest.raises(ReidnetError, match=r"nope\.pth does not exist: check evaluate\.checkpoint"):
        evaluate(spec)


def test_center_loss_with_weight_zero_trains_and_leaves_the_centers_alone(synthetic, tmp_path):
    """center_loss_weight 0 is allowed: the centers get no gradient (and no division by 0)."""
    spec = tiny_spec(
        synthetic,
        tmp_path / "r",
        "train.num_epochs=1",
        "model.with_center_loss=true",
        "model.metric_loss_type=triplet_center",
        "train.optim.center_loss_weight=0",
    )
    run = TrainingRun(spec)
    try:
        centers = run.parts.criterion.center_loss.centers.detach().clone()
        result = run.fit()
    finally:
        run.close()
    assert np.isfinite(result.history[0]["loss_total"])
    assert result.history[0]["loss_center"] > 0  # computed and logged, weighted by 0
    assert torch.equal(run.parts.criterion.center_loss.centers.detach(), centers)


def test_the_specs_cudnn_flags_are_applied(synthetic, tmp_path):
    from reidnet.training.parts import apply_cuda_settings

    before = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.get_float32_matmul_precision(),
    )
    try:
        for benchmark, deterministic in ((True, False), (False, True)):
            spec = tiny_spec(
                synthetic,
                tmp_path / "r",
                f"train.cudnn.benchmark={str(benchmark).lower()}",
                f"train.cudnn.deterministic={str(deterministic).lower()}",
            )
            apply_cuda_settings(spec)
            assert torch.backends.cudnn.benchmark is benchmark
            assert torch.backends.cudnn.deterministic is deterministic
            assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.set_float32_matmul_precision(before[2])


def test_a_finished_run_without_its_resume_state_is_complete_not_an_error(synthetic, tmp_path):
    """The quick start drops reid_model_latest.pth after training; `reidnet train` on its
    folder again said the weights-only epoch file cannot be resumed instead of 'complete'."""
    spec = tiny_spec(synthetic, tmp_path / "r", "train.num_epochs=1")
    first = train(spec)
    (first.results_dir / "reid_model_latest.pth").unlink()
    again = train(tiny_spec(synthetic, tmp_path / "r", "train.num_epochs=1"))
    assert again.already_complete and again.epochs_completed == 1
    with pytest.raises(ReidnetError, match="holds the weights only"):  # more epochs: no state
        TrainingRun(tiny_spec(synthetic, tmp_path / "r", "train.num_epochs=2"))
