"""The experiment spec: TAO compatibility, defaults, overrides and error messages."""

from pathlib import Path

import pytest
import yaml

from reidnet.config import (
    ACTIONS,
    dump_spec,
    load_spec,
    parse_override,
    spec_json_schema,
    write_default_specs,
)
from reidnet.errors import ReidnetError

TAO_SPEC = Path(__file__).parent / "data" / "tao_reid_train_spec.yaml"


def test_tao_spec_loads_unchanged_and_legacy_steps_become_lr_steps():
    spec = load_spec(TAO_SPEC)
    assert spec.train.optim.lr_steps == [40, 70]
    assert spec.model.backbone == "resnet_50"
    assert spec.dataset.train_folders()[0].path == "/data/sample_train"
    assert spec.dataset.train_folders()[0].source == "real"
    assert spec.re_ranking.re_ranking is True
    assert spec.encryption_key == "nvidia_tao"
    assert spec.export.onnx_file.endswith("reid_model.onnx")


def test_defaults_are_the_reference_values():
    spec = load_spec(data={})
    assert spec.dataset.pixel_mean == [0.485, 0.456, 0.406]
    assert spec.dataset.pixel_std == [0.226, 0.226, 0.226]
    assert (spec.model.input_height, spec.model.input_width) == (256, 128)
    assert (spec.model.feat_dim, spec.model.last_stride) == (256, 1)
    assert (spec.dataset.batch_size, spec.dataset.num_instances) == (64, 4)
    assert (spec.dataset.padding, spec.dataset.prob, spec.dataset.re_prob) == (10, 0.5, 0.5)
    optim = spec.train.optim
    assert (optim.name, optim.base_lr, optim.weight_decay) == ("Adam", 0.00035, 0.0005)
    assert (optim.warmup_factor, optim.warmup_iters, optim.lr_steps) == (0.01, 10, [40, 70])
    assert (optim.center_loss_weight, optim.center_lr, optim.triplet_loss_margin) == (
        0.0005,
        0.5,
        0.3,
    )
    ranking = spec.re_ranking
    assert (ranking.k1, ranking.k2, ranking.lambda_value) == (20, 6, 0.3)


def test_both_steps_and_lr_steps_disagreeing_is_an_error():
    with pytest.raises(ReidnetError, match=r"steps and train\.optim\.lr_steps"):
        load_spec(data={"train": {"optim": {"steps": [1], "lr_steps": [2]}}})


def test_unknown_key_names_key_section_and_closest_key():
    with pytest.raises(ReidnetError) as info:
        load_spec(data={"train": {"optim": {"base_lrr": 0.1}}})
    message = str(info.value)
    assert "'base_lrr'" in message
    assert "section train.optim" in message
    assert "did you mean 'base_lr'" in message


def test_unknown_top_level_section_suggests_the_right_one():
    with pytest.raises(ReidnetError, match="'datset' in section top level; did you mean 'dataset'"):
        load_spec(data={"datset": {}})


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ReidnetError, match=r"train.num_epochs: expected an integer, got 'ten'"):
        load_spec(data={"train": {"num_epochs": "ten"}})
    with pytest.raises(ReidnetError, match=r"model.with_flip_feature: expected true or false"):
        load_spec(data={"model": {"with_flip_feature": "sometimes"}})


def test_batch_size_not_multiple_of_num_instances_names_both_keys():
    with pytest.raises(ReidnetError) as info:
        load_spec(data={"dataset": {"batch_size": 30, "num_instances": 4}})
    assert "dataset.batch_size (30)" in str(info.value)
    assert "dataset.num_instances (4)" in str(info.value)


def test_softmax_sampler_does_not_need_pk_batches():
    spec = load_spec(data={"dataset": {"batch_size": 30, "sampler": "softmax"}})
    assert spec.dataset.batch_size == 30


def test_feat_dim_below_one_is_refused():
    with pytest.raises(ReidnetError, match=r"model.feat_dim: must be from 1 to 8192 \(got 0\)"):
        load_spec(data={"model": {"feat_dim": 0}})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("model.backbone", "resnet_42", "resnet_18"),
        ("model.network", "timm", "tao"),
        ("model.last_stride", 3, "2"),
        ("model.pretrain_choice", "coco", "imagenet"),
        ("model.neck", "bn", "bnneck"),
        ("model.neck_feat", "middle", "before"),
        ("model.metric_loss_type", "arcface", "triplet_center"),
        ("dataset.sampler", "random", "softmax_triplet"),
    ],
)
def test_a_value_the_model_or_loss_does_not_know_is_refused_with_the_allowed_ones(
    key, value, allowed
):
    """The spec is where these values are checked (the model and loss code does not re-check)."""
    section, name = key.split(".")
    with pytest.raises(ReidnetError, match=key.replace(".", r"\.")) as info:
        load_spec(data={section: {name: value}})
    assert allowed in str(info.value)


def test_a_sampler_and_metric_loss_leaving_no_loss_name_both_keys():
    data = {"model": {"metric_loss_type": "center", "with_center_loss": True}}
    with pytest.raises(ReidnetError, match="neither an identity nor a triplet loss") as info:
        load_spec(data={**data, "dataset": {"sampler": "triplet"}})
    assert "dataset.sampler" in str(info.value) and "model.metric_loss_type" in str(info.value)
    assert load_spec(data={**data, "dataset": {"sampler": "softmax"}}).model.with_center_loss


def test_mobilenet_on_the_tao_network_is_refused_by_the_spec():
    with pytest.raises(ReidnetError, match=r"mobilenet_v2 exists only as model\.network"):
        load_spec(data={"model": {"backbone": "mobilenet_v2", "network": "tao"}})


def test_center_metric_loss_without_center_loss_names_both_keys():
    with pytest.raises(ReidnetError) as info:
        load_spec(data={"model": {"metric_loss_type": "center"}})
    assert "model.metric_loss_type" in str(info.value)
    assert "model.with_center_loss" in str(info.value)
    spec = load_spec(data={"model": {"metric_loss_type": "center", "with_center_loss": True}})
    assert spec.model.with_center_loss


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.num_epochs=5", "train.num_epochs", 5),
        ("train.optim.base_lr=1e-3", "train.optim.base_lr", 0.001),
        ("model.with_flip_feature=true", "model.with_flip_feature", True),
        ("dataset.pixel_mean=[0.5,0.5,0.5]", "dataset.pixel_mean", [0.5, 0.5, 0.5]),
        ("model.pretrained_model_path=/w/x.pth", "model.pretrained_model_path", "/w/x.pth"),
        ("results_dir=", "results_dir", None),
    ],
)
def test_override_values_are_typed_as_yaml(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_on_top_of_the_file():
    spec = load_spec(TAO_SPEC, ["train.num_epochs=5", "dataset.pixel_mean=[0.5,0.5,0.5]"])
    assert spec.train.num_epochs == 5
    assert spec.dataset.pixel_mean == [0.5, 0.5, 0.5]
    assert spec.train.optim.lr_steps == [40, 70]


def test_override_of_unknown_key_fails_like_a_spec_key():
    with pytest.raises(ReidnetError, match="'num_epoch' in section train; did you mean"):
        load_spec(TAO_SPEC, ["train.num_epoch=5"])


def test_malformed_override_says_the_expected_form():
    with pytest.raises(ReidnetError, match=r"key\.sub=value"):
        load_spec(data={}, overrides=["train.num_epochs"])


def test_train_dataset_dir_takes_tagged_folders():
    spec = load_spec(
        data={
            "dataset": {
                "train_dataset_dir": [
                    "/real/train",
                    {"path": "/synth/train", "source": "synthetic", "identity_group": "g"},
                ]
            }
        }
    )
    real, synthetic = spec.dataset.train_folders()
    assert (real.path, real.source, real.identity_group) == ("/real/train", "real", None)
    assert (synthetic.source, synthetic.identity_group) == ("synthetic", "g")


def test_bad_source_tag_is_refused():
    with pytest.raises(ReidnetError, match="source"):
        load_spec(data={"dataset": {"train_dataset_dir": [{"path": "/x", "source": "fake"}]}})


def test_default_specs_hold_every_key_and_reload(tmp_path):
    written = write_default_specs(tmp_path / "results")
    assert sorted(p.stem for p in written) == sorted(ACTIONS)
    for path in written:
        data = yaml.safe_load(path.read_text())
        assert data["results_dir"] == str(tmp_path / "results")
        assert data["train"]["optim"]["lr_steps"] == [40, 70]
        assert data["re_ranking"]["k1"] == 20
        assert load_spec(path).model.feat_dim == 256


def test_specs_reidnet_writes_read_back_without_warnings(tmp_path, caplog):
    """A resolved spec or a default spec, written by reidnet, warned on reading that W&B logging
    is ignored: the file said `wandb.enable: true`, TAO's default. reidnet writes what it does."""
    import logging

    caplog.set_level(logging.WARNING, logger="reidnet.config")
    resolved = tmp_path / "resolved_spec.yaml"
    resolved.write_text(dump_spec(load_spec(data={"results_dir": str(tmp_path)})))
    for path in [resolved, *write_default_specs(tmp_path / "results")]:
        assert yaml.safe_load(path.read_text())["wandb"]["enable"] is False
        load_spec(path)
    assert caplog.text == ""
    load_spec(data={"wandb": {"enable": True}})  # a user's own W&B setting is still named
    assert "wandb" in caplog.text


def test_json_schema_holds_defaults():
    schema = spec_json_schema()
    optim = schema["$defs"]["OptimConfig"]["properties"]
    assert optim["base_lr"]["default"] == 0.00035
    assert schema["$defs"]["DatasetConfig"]["properties"]["num_instances"]["default"] == 4


def test_action_results_dir_defaults_under_results_dir():
    spec = load_spec(data={"results_dir": "/r"})
    assert spec.action_results_dir("evaluate") == Path("/r/evaluate")
    with pytest.raises(ReidnetError, match="results_dir"):
        load_spec(data={}).action_results_dir("train")


def test_compatibility_only_keys_are_warned_about_and_honoured_ones_are_not(caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="reidnet.config")
    load_spec(
        data={
            "dataset": {"num_classes": 500},
            "evaluate": {"num_gpus": 2, "gpu_ids": [0, 1]},
            "model": {"jpm": True},
            "encryption_key": "nvidia_tao",
            "train": {"optim": {"large_fc_lr": True, "warmup_method": "cosine"}},
        }
    )
    warned = caplog.text
    for key in ("evaluate.num_gpus", "model.jpm", "encryption_key"):
        assert key in warned
    # num_classes is compared with the counted identities when training starts, not at load
    for honoured in ("large_fc_lr", "warmup_method", "cudnn", "num_classes"):
        assert honoured not in warned


def test_every_spec_key_is_read_by_the_code_or_listed_as_compatibility_only():
    """A key that no module reads and that is not declared compatibility-only would be accepted
    silently: the reference's `large_fc_lr` and `cudnn.*` were, before they were honoured."""
    import reidnet
    from reidnet.config import COMPAT_ONLY_KEYS, ExperimentSpec

    source_root = Path(reidnet.__file__).parent
    spec_package = source_root / "config"  # declares the keys: reading them counts elsewhere
    code = "\n".join(
        p.read_text() for p in source_root.rglob("*.py") if spec_package not in p.parents
    )
    compat = {name for _, names in COMPAT_ONLY_KEYS.values() for name in names}
    compat |= {"lr_monitor"}  # warned about in compat_only_keys_set
    compat |= {"input_channels"}  # Literal[3]: any other value is refused when the spec loads

    def fields(model_class, prefix=""):
        for name, info in model_class.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from fields(annotation, f"{prefix}{name}.")
            else:
                yield prefix + name, name

    unread = [
        dotted
        for dotted, name in fields(ExperimentSpec)
        if name not in compat and not dotted.startswith("wandb.") and f".{name}" not in code
    ]
    assert unread == []


def test_relative_paths_in_a_spec_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "specs"
    folder.mkdir(parents=True)
    (folder / "train.yaml").write_text(
        "results_dir: ../results\n"
        "model: {pretrained_model_path: weights/r50.pth}\n"
        "dataset:\n"
        "  train_dataset_dir: [../data/a, {path: ../data/b, source: synthetic}, /abs/c]\n"
        "  query_dataset_dir: ../data/query\n"
        "evaluate: {checkpoint: ../results/train/model_epoch_010.pth}\n"
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: the file's folder decides, not this one
    spec = load_spec(folder / "train.yaml", ["dataset.test_dataset_dir=data/gallery"])
    project = tmp_path / "project"
    assert spec.results_dir == str(project / "results")  # normalised: no specs/../ printed
    assert Path(spec.model.pretrained_model_path) == folder / "weights" / "r50.pth"
    paths = [Path(f.path).resolve() for f in spec.dataset.train_folders()]
    assert paths == [project / "data" / "a", project / "data" / "b", Path("/abs/c")]
    assert Path(spec.dataset.query_dataset_dir).resolve() == project / "data" / "query"
    assert Path(spec.evaluate.checkpoint).resolve() == project / "results/train/model_epoch_010.pth"
    assert spec.dataset.test_dataset_dir == "data/gallery"  # an override: the current folder


def test_a_written_spec_reruns_from_any_folder_with_the_same_paths(tmp_path, monkeypatch):
    """resolved_spec.yaml is the record of a run: relative paths of the run (here from the
    command line, relative to the folder it ran in) are written absolute, so loading the file
    from elsewhere finds the same folders. Before, `quickstart_out/data/query` came back as
    `<the file's folder>/quickstart_out/data/query`."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    spec = load_spec(
        overrides=[
            "results_dir=out/results",
            "dataset.train_dataset_dir=[data/train, {path: ../synth/train, source: synthetic}]",
            "dataset.query_dataset_dir=./data/query",
            "evaluate.checkpoint=out/results/train/model_epoch_002.pth",
        ]
    )
    record = project / "out" / "results" / "train" / "resolved_spec.yaml"
    record.parent.mkdir(parents=True)
    record.write_text(dump_spec(spec))
    monkeypatch.chdir(tmp_path)
    again = load_spec(record)
    assert again.results_dir == str(project / "out" / "results")
    assert [f.path for f in again.dataset.train_folders()] == [
        str(project / "data" / "train"),
        str(tmp_path / "synth" / "train"),
    ]
    assert again.dataset.query_dataset_dir == str(project / "data" / "query")
    assert again.evaluate.checkpoint == str(project / "out/results/train/model_epoch_002.pth")
    assert again.dataset.test_dataset_dir is None  # unset stays unset, not the file's folder


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    spec = load_spec(path)
    assert spec.model.backbone and spec.train.num_epochs >= 1


def test_the_quickstart_config_is_the_one_the_package_ships():
    """`reidnet quickstart` reads the package's copy; configs/ holds the same file for users."""
    shipped = REPO / "src" / "reidnet" / "resources" / "quickstart.yaml"
    assert (REPO / "configs" / "quickstart.yaml").read_bytes() == shipped.read_bytes()


def test_deep_merge_merges_sections_and_changes_neither_input():
    from reidnet.config import deep_merge

    base = {"train": {"num_epochs": 10, "optim": {"base_lr": 0.1}}, "model": {"feat_dim": 256}}
    extra = {"train": {"optim": {"base_lr": 0.01}}, "dataset": {"batch_size": [64]}}
    merged = deep_merge(base, extra)
    assert merged == {
        "train": {"num_epochs": 10, "optim": {"base_lr": 0.01}},
        "model": {"feat_dim": 256},
        "dataset": {"batch_size": [64]},
    }
    merged["train"]["optim"]["base_lr"] = 5
    merged["dataset"]["batch_size"].append(1)
    assert base["train"]["optim"]["base_lr"] == 0.1 and extra["dataset"]["batch_size"] == [64]


def test_the_spec_allows_exactly_the_backbones_the_model_builds():
    from typing import get_args

    from reidnet.config import ModelConfig
    from reidnet.model import BACKBONES

    allowed = get_args(ModelConfig.model_fields["backbone"].annotation)
    assert sorted(allowed) == sorted(BACKBONES)
