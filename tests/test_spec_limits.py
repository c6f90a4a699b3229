"""Spec values that once reached torch or the terminal unbounded: size-like integers, huge echoed
values, YAML alias bombs and spec files that are not UTF-8 (red-team faults 9, 10 and 15)."""

from __future__ import annotations

import json
import time

import pytest

from cli_process import run_reidnet, user_error
from reidnet.config import MAX_YAML_NODES, load_spec, parse_override, shown
from reidnet.errors import ReidnetError


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("model", "input_height", 10**6, "from 16 to 2048"),
        ("model", "input_width", 10**6, "from 16 to 2048"),
        ("model", "feat_dim", 10**9, "from 1 to 8192"),
        ("model", "feat_dim", 0, "from 1 to 8192"),
        ("dataset", "padding", 10**7, "from 0 to 2048"),
        ("dataset", "batch_size", 10**9, "from 1 to 8192"),
        ("train", "seed", 10**30, "from -1 to 4294967295"),
        ("train", "num_epochs", 10**12, "from 1 to 100000"),
        ("re_ranking", "num_query", 10**6, "from 1 to 100"),
    ],
)
def test_size_like_integers_are_bounded_with_key_and_range(section, key, value, allowed):
    with pytest.raises(ReidnetError) as caught:
        load_spec(data={section: {key: value}})
    assert f"{section}.{key}: must be {allowed} (got {value})" in str(caught.value)


def test_list_items_are_bounded_too():
    with pytest.raises(ReidnetError, match=r"train.optim.lr_steps.1: must be from 0 to 100000"):
        load_spec(data={"train": {"optim": {"lr_steps": [40, 10**9]}}})


def test_the_largest_allowed_values_still_load():
    spec = load_spec(data={"train": {"seed": 2**32 - 1, "num_epochs": 100_000}})
    assert (spec.train.seed, spec.train.num_epochs) == (2**32 - 1, 100_000)


def test_shown_cuts_long_values_and_says_how_long_they_were():
    assert shown("abc") == "'abc'"
    text = shown("x" * 1000, limit=10)
    assert text == "'xxxxxxxxx... (1002 characters in all)"


def test_an_error_never_echoes_a_huge_value_whole():
    with pytest.raises(ReidnetError) as caught:
        load_spec(data={"model": {"backbone": "x" * 900_000}})
    message = str(caught.value)
    assert len(message) < 1000
    assert "model.backbone" in message and "900002 characters" in message


def test_an_unknown_huge_key_is_named_short():
    with pytest.raises(ReidnetError) as caught:
        load_spec(data={"model": {"k" * 500_000: 1}})
    assert len(str(caught.value)) < 2000 and "unknown key" in str(caught.value)


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(_alias_bomb(9))  # 9**9 = 387 million strings once expanded
    start = time.perf_counter()
    with pytest.raises(ReidnetError) as caught:
        load_spec(spec)
    assert time.perf_counter() - start < 10  # a guard against hanging, not a speed target
    message = str(caught.value)
    assert str(spec) in message and f"more than {MAX_YAML_NODES} values" in message
    assert len(message) < 1000


def test_a_recursive_alias_is_refused(tmp_path):
    spec = tmp_path / "loop.yaml"
    spec.write_text("model: &m\n  inner: *m\n")
    with pytest.raises(ReidnetError, match="refers to itself"):
        load_spec(spec)


def test_an_override_alias_bomb_is_refused():
    with pytest.raises(ReidnetError, match="values through its aliases"):
        parse_override("model.x=" + _alias_bomb(9).replace("\n", ", ").join("{}"))


def test_ordinary_anchors_still_work(tmp_path):
    spec = tmp_path / "anchors.yaml"
    spec.write_text("dataset:\n  pixel_mean: &m [0.5, 0.5, 0.5]\n  pixel_std: *m\n")
    assert load_spec(spec).dataset.pixel_std == [0.5, 0.5, 0.5]


def test_a_spec_file_that_is_not_utf8_is_a_clean_cli_error(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("model:\n  backbone: résnet_50\n".encode("latin-1"))
    message = user_error(run_reidnet("spec", "check", "-e", str(spec)))
    assert "latin1.yaml: not UTF-8 text (byte b'\\xe9' at offset 20)" in message


FINITE_FIX = "write an ordinary number, e.g. the default"


@pytest.mark.parametrize(
    ("override", "key", "shown_value", "default"),
    [
        ("train.optim.base_lr=1e309", "train.optim.base_lr", "inf", "0.00035"),  # overflow
        ("train.optim.base_lr=.inf", "train.optim.base_lr", "inf", "0.00035"),
        ("train.optim.base_lr=.nan", "train.optim.base_lr", "nan", "0.00035"),
        ("train.optim.base_lr=inf", "train.optim.base_lr", "'inf'", "0.00035"),
        ("model.id_loss_weight=-.inf", "model.id_loss_weight", "-inf", "1.0"),
        ("train.grad_clip=.nan", "train.grad_clip", "nan", "0.0"),
        ("model.drop_path=.inf", "model.drop_path", "inf", "0.1"),  # no range check at all
        ("dataset.pixel_mean=[0.5,.nan,0.5]", "dataset.pixel_mean.1", "nan", "0.456"),
        ("train.num_epochs=.inf", "train.num_epochs", "inf", "120"),
    ],
)
def test_a_non_finite_override_is_refused_naming_the_key(override, key, shown_value, default):
    with pytest.raises(ReidnetError) as caught:
        load_spec(overrides=[override])
    expected = f"{key}: must be a finite number, not {shown_value} "
    assert expected in str(caught.value)
    assert f"{FINITE_FIX} {default}" in str(caught.value)


def test_non_finite_numbers_in_a_spec_file_are_refused_naming_each_key(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  optim:\n    base_lr: 1e309\n    gamma: .NaN\n")
    with pytest.raises(ReidnetError) as caught:
        load_spec(spec)
    message = str(caught.value)
    # YAML 1.1 reads 1e309 as a string, which overflows when parsed as a float
    assert "train.optim.base_lr: must be a finite number, not '1e309'" in message
    assert "train.optim.gamma: must be a finite number, not nan" in message


def test_json_infinity_and_nan_literals_are_refused():
    # Python's json reads Infinity, NaN and 1e309 as floats: what a JSON spec or body holds.
    raw = json.loads(
        '{"dataset": {"pixel_std": [0.2, Infinity, 0.2]}, "re_ranking": '
        '{"lambda_value": NaN}, "train": {"optim": {"base_lr": 1e309}}}'
    )
    with pytest.raises(ReidnetError) as caught:
        load_spec(data=raw)
    message = str(caught.value)
    for key, value in [
        ("dataset.pixel_std.1", "inf"),
        ("re_ranking.lambda_value", "nan"),
        ("train.optim.base_lr", "inf"),
    ]:
        assert f"{key}: must be a finite number, not {value}" in message


def test_a_non_finite_override_is_a_clean_cli_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  num_epochs: 2\n")
    message = user_error(run_reidnet("spec", "check", "-e", str(spec), "train.optim.base_lr=1e309"))
    assert "train.optim.base_lr: must be a finite number, not inf" in message
