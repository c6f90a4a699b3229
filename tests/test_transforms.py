"""Train / eval transforms and image reading: output format, exact normalisation, flip rate,
zero padding, mean-filled random erasing, and decode errors that name the file."""

import pytest
import torch
from PIL import Image

from reidnet.data.transforms import (
    RandomErasing,
    build_eval_transform,
    build_train_transform,
    read_image_rgb,
)
from reidnet.errors import ReidnetError

MEAN = (0.485, 0.456, 0.406)
STD = (0.226, 0.226, 0.226)


def constant_image(rgb, size=(40, 90)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def normalised(rgb) -> torch.Tensor:
    return torch.tensor([(v / 255 - m) / s for v, m, s in zip(rgb, MEAN, STD, strict=True)])


def test_transforms_return_float32_chw_of_the_requested_size():
    image = Image.frombytes("RGB", (50, 100), bytes(range(256)) * 58 + bytes(152))
    for transform in (build_train_transform(64, 32), build_eval_transform(64, 32)):
        out = transform(image)
        assert out.dtype == torch.float32
        assert out.shape == (3, 64, 32)


def test_eval_transform_normalises_exactly():
    out = build_eval_transform(64, 32, MEAN, STD)(constant_image((200, 100, 50)))
    # (200/255 - 0.485)/0.226 = 1.3243..., (100/255 - 0.456)/0.226 = -0.2824...,
    # (50/255 - 0.406)/0.226 = -0.9289...
    expected = normalised((200, 100, 50))[:, None, None].expand(3, 64, 32)
    torch.testing.assert_close(out, expected)


def half_white_image() -> Image.Image:
    image = Image.new("RGB", (32, 64), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 16, 64))  # left half white
    return image


def flipped(out: torch.Tensor) -> bool:
    return bool(out[0, 0, 0] < 0)  # the top-left pixel is black only after a mirror


def test_train_flip_happens_about_half_the_time():
    transform = build_train_transform(64, 32, padding=0, re_prob=0.0, flip_prob=0.5)
    torch.manual_seed(0)
    image = half_white_image()
    rate = sum(flipped(transform(image)) for _ in range(400)) / 400
    assert 0.42 < rate < 0.58  # binomial(400, 0.5): 3 standard deviations


@pytest.mark.parametrize(("flip_prob", "expected"), [(0.0, False), (1.0, True)])
def test_flip_probability_extremes(flip_prob, expected):
    transform = build_train_transform(64, 32, padding=0, re_prob=0.0, flip_prob=flip_prob)
    assert all(flipped(transform(half_white_image())) is expected for _ in range(10))


def test_padding_is_black_and_crops_shift_the_image():
    transform = build_train_transform(64, 32, padding=10, re_prob=0.0, flip_prob=0.0)
    white, black = normalised((255, 255, 255)), normalised((0, 0, 0))
    torch.manual_seed(0)
    saw_border = False
    for _ in range(20):
        out = transform(constant_image((255, 255, 255)))
        is_white = torch.isclose(out, white[:, None, None]).all(0)
        is_black = torch.isclose(out, black[:, None, None]).all(0)
        assert (is_white | is_black).all()
        saw_border |= bool(is_black.any())
    assert saw_border


def test_random_erasing_fills_one_rectangle_with_the_given_values():
    fill = (0.1, 0.2, 0.3)
    erasing = RandomErasing(probability=1.0, fill=fill)
    torch.manual_seed(0)
    for _ in range(20):
        out = erasing(torch.zeros(3, 64, 32))
        erased = out != 0
        assert torch.equal(erased[0], erased[1]) and torch.equal(erased[0], erased[2])
        rows = erased[0].any(1).nonzero().flatten()
        cols = erased[0].any(0).nonzero().flatten()
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        assert erased[0, top:bottom, left:right].all()
        assert int(erased[0].sum()) == (bottom - top) * (right - left)
        area_ratio = float(erased[0].sum()) / (64 * 32)
        assert 0.01 < area_ratio < 0.45  # sl = 0.02 .. sh = 0.4, up to pixel rounding
        for channel, value in enumerate(fill):
            assert torch.all(out[channel][erased[channel]] == value)


def test_random_erasing_probability_zero_leaves_the_image():
    image = torch.rand(3, 64, 32)
    assert torch.equal(RandomErasing(probability=0.0)(image), image)


def test_train_erasing_writes_the_pixel_mean_into_the_normalised_tensor():
    transform = build_train_transform(64, 32, MEAN, STD, padding=0, flip_prob=0.0, re_prob=1.0)
    black = normalised((0, 0, 0))
    torch.manual_seed(1)
    out = transform(constant_image((0, 0, 0)))
    is_mean = torch.isclose(out, torch.tensor(MEAN)[:, None, None]).all(0)
    is_black = torch.isclose(out, black[:, None, None]).all(0)
    assert is_mean.any() and is_black.any()
    assert (is_mean | is_black).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"re_prob": 1.5}, "dataset.re_prob"),
        ({"flip_prob": -0.1}, "dataset.prob"),
        ({"padding": -1}, "dataset.padding"),
        ({"pixel_std": (0.2, 0.0, 0.2)}, "dataset.pixel_std"),
        ({"pixel_mean": (0.5, 0.5)}, "dataset.pixel_mean"),
        ({"height": 0}, "model.input_height"),
    ],
)
def test_invalid_transform_options_name_the_spec_key(kwargs, key):
    with pytest.raises(ReidnetError, match=key):
        build_train_transform(**kwargs)


def test_read_image_converts_to_rgb(tmp_path):
    path = tmp_path / "0001_c1s1_000151_01.png"
    Image.new("L", (20, 40), 128).save(path)
    image = read_image_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (20, 40)
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_undecodable_image_names_the_file(tmp_path):
    path = tmp_path / "0002_c2s1_000301_01.jpg"
    path.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ReidnetError, match=r"0002_c2s1_000301_01\.jpg"):
        read_image_rgb(path)


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "0003_c1s1_000001_01.jpg"
    constant_image((10, 20, 30), (64, 128)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ReidnetError, match=r"0003_c1s1_000001_01\.jpg"):
        read_image_rgb(path)


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(ReidnetError, match=r"missing\.jpg"):
        read_image_rgb(tmp_path / "missing.jpg")
