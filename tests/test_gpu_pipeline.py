"""The gpu data pipeline, run on the CPU (the same tensor code): decoding equals the per-image
path, each augmentation has the per-image transforms' distribution, batches are reproducible per
step, and training with it learns, resumes mid-epoch exactly and survives a failed compile."""

from __future__ import annotations

import logging
import signal

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from imagefiles import write_image
from reidnet.data import gpu
from reidnet.data.transforms import (
    RandomErasing,
    build_eval_transform,
    build_train_transform,
    read_image_rgb,
)
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt
from reidnet.training import trainer as trainer_module
from reidnet.training.trainer import TrainingInterrupted, TrainingRun, train
from tiny_training import tiny_spec

MEAN = (0.485, 0.456, 0.406)
STD = (0.226, 0.226, 0.226)
H, W = 64, 32


def draws(augment: gpu.BatchAugment, count: int, seed: int = 0) -> gpu.AugmentParams:
    return augment.draw(count, torch.Generator().manual_seed(seed))


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(
        b, grid, side="right"
    ) / len(b)
    return float(np.abs(gap).max())


def ks_critical(n: int, m: int, alpha_factor: float = 1.95) -> float:
    """The KS critical value at alpha = 0.001 (factor 1.95)."""
    return alpha_factor * np.sqrt((n + m) / (n * m))


# -- decode once, normalise ------------------------------------------------------------------


def test_decoded_and_normalised_images_equal_the_eval_transform(tmp_path):
    sizes = [(128, 64), (100, 37), (20, 90)]  # down, odd and up-scaling resizes
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=s) for i, s in enumerate(sizes)]
    decoded = gpu.decode_resized(paths, H, W, workers=2)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 3, H, W)
    ours = gpu.Normalize(MEAN, STD)(decoded)
    reference = torch.stack(
        [build_eval_transform(H, W, MEAN, STD)(read_image_rgb(p)) for p in paths]
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_decoded_images_stay_on_the_gpu_only_when_they_fit():
    cuda = torch.device("cuda:0")
    gb = 10**9
    assert gpu.choose_placement(13 * gb // 10, cuda, 0.5, free_bytes=80 * gb)[0] == "device"
    placement, reason = gpu.choose_placement(13 * gb // 10, cuda, 0.5, free_bytes=2 * gb)
    assert placement == "host" and "train.gpu_data_memory_share" in reason
    assert gpu.choose_placement(gb, torch.device("cpu"), 0.5)[0] == "host"


def test_a_host_store_for_the_gpu_is_pageable_and_gathered_on_the_host(synthetic):
    """Pinning the whole store would round it up to a power of two (70 GB -> 128 GiB): only the
    per-batch buffers are pinned. Nothing here needs a GPU: the store never touches it."""
    paths = sorted((synthetic / "query").glob("*.jpg"))[:6]
    store = gpu.load_decoded(paths, H, W, torch.device("cuda:0"), placement="host", workers=1)
    assert store.placement == "host" and store.staged
    assert store.images.device.type == "cpu" and not store.images.is_pinned()
    assert not gpu.DecodedImages(store.images, torch.device("cpu"), "host").staged


# -- one batch, given choices: exact geometry --------------------------------------------------


def test_flip_pad_crop_and_erase_match_the_per_image_operations():
    height, width, pad = 20, 12, 3
    images = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8)
    augment = gpu.BatchAugment(height, width, MEAN, STD, padding=pad)

    def longs(*values):
        return torch.tensor(values)

    params = gpu.AugmentParams(
        flip=torch.tensor([True, False, True]),
        crop_top=longs(0, 6, 3),
        crop_left=longs(6, 0, 1),
        erase=torch.tensor([False, False, True]),
        erase_top=longs(0, 0, 2),
        erase_left=longs(0, 0, 3),
        erase_height=longs(1, 1, 4),
        erase_width=longs(1, 1, 5),
    )
    out = augment.apply(images, params)
    assert out.is_contiguous(memory_format=torch.channels_last)
    for i in range(3):
        image = TF.horizontal_flip(images[i]) if params.flip[i] else images[i]
        top, left = int(params.crop_top[i]), int(params.crop_left[i])
        image = TF.pad(image, [pad], fill=0)[:, top : top + height, left : left + width]
        expected = TF.normalize(image.float() / 255, list(MEAN), list(STD))
        if params.erase[i]:  # rows 2..5, columns 3..7 hold the raw pixel mean, like BoT's
            expected[:, 2:6, 3:8] = torch.tensor(MEAN)[:, None, None]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


# -- distributions of the per-sample choices ---------------------------------------------------


@pytest.mark.parametrize("prob", [0.0, 0.3, 0.5, 1.0])
def test_flip_rate_is_the_flip_probability(prob):
    rate = draws(gpu.BatchAugment(H, W, flip_prob=prob), 20_000).flip.float().mean().item()
    assert abs(rate - prob) < 4 * np.sqrt(prob * (1 - prob) / 20_000) + 1e-9


def test_crop_offsets_are_uniform_over_0_to_twice_the_padding():
    params = draws(gpu.BatchAugment(H, W, padding=10), 21_000)
    for offsets in (params.crop_top, params.crop_left):
        counts = torch.bincount(offsets, minlength=21).numpy()
        assert len(counts) == 21  # 0..20 and nothing beyond
        chi_square = ((counts - 1000) ** 2 / 1000).sum()
        assert chi_square < 45.3  # chi-square, 20 degrees of freedom, p = 0.001
    assert (draws(gpu.BatchAugment(H, W, padding=0), 100).crop_top == 0).all()


@pytest.mark.parametrize("re_prob", [0.0, 0.5, 1.0])
def test_erasing_rate_is_re_prob(re_prob):
    rate = draws(gpu.BatchAugment(H, W, re_prob=re_prob), 20_000).erase.float().mean().item()
    assert abs(rate - re_prob) < 4 * np.sqrt(re_prob * (1 - re_prob) / 20_000) + 1e-9


def erased_boxes_of_cpu_random_erasing(count: int) -> np.ndarray:
    """(top, left, height, width) of the rectangles the per-image RandomErasing writes."""
    torch.manual_seed(0)
    erasing = RandomErasing(probability=1.0, fill=(1.0, 1.0, 1.0))
    boxes = []
    for _ in range(count):
        mask = erasing(torch.zeros(3, H, W))[0] == 1
        rows, columns = mask.any(1).nonzero(), mask.any(0).nonzero()
        if len(rows):
            top, left = int(rows[0]), int(columns[0])
            boxes.append((top, left, int(rows[-1]) - top + 1, int(columns[-1]) - left + 1))
    return np.array(boxes)


def test_erased_rectangles_follow_the_cpu_random_erasing_distribution():
    count = 3000
    cpu_boxes = erased_boxes_of_cpu_random_erasing(count)
    params = draws(gpu.BatchAugment(H, W, re_prob=1.0), count, seed=1)
    ours = torch.stack(
        [params.erase_top, params.erase_left, params.erase_height, params.erase_width], 1
    )[params.erase].numpy()
    assert len(cpu_boxes) > 0.99 * count and len(ours) > 0.99 * count
    assert (ours[:, 0] + ours[:, 2] <= H).all() and (ours[:, 1] + ours[:, 3] <= W).all()
    critical = ks_critical(len(cpu_boxes), len(ours))
    area_cpu = cpu_boxes[:, 2] * cpu_boxes[:, 3] / (H * W)
    area_ours = ours[:, 2] * ours[:, 3] / (H * W)
    assert ks_statistic(area_cpu, area_ours) < critical
    assert abs(area_cpu.mean() - area_ours.mean()) < 0.01
    np.testing.assert_allclose(
        np.quantile(area_ours, [0.1, 0.5, 0.9]), np.quantile(area_cpu, [0.1, 0.5, 0.9]), atol=0.02
    )
    for column, name in enumerate(("top", "left", "height", "width")):
        assert ks_statistic(cpu_boxes[:, column], ours[:, column]) < critical, name


def test_augmented_images_match_the_cpu_transform_on_average():
    """Flip, pad, crop, normalise and erase together: the mean of each pixel over many
    augmentations of one image agrees with the per-image transform's within sampling noise (a
    one-pixel geometry error, e.g. padding 9, doubles the statistic), and so does its spread."""
    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    count = 1000
    transform = build_train_transform(H, W, MEAN, STD)
    cpu = torch.stack([transform(TF.to_pil_image(image)) for _ in range(count)])
    augment = gpu.BatchAugment(H, W, MEAN, STD)
    ours = augment(image.expand(count, -1, -1, -1), torch.Generator().manual_seed(0))
    standard_error = (cpu.var(0) / count + ours.var(0) / count).sqrt()
    z_squared = ((cpu.mean(0) - ours.mean(0)) / standard_error).pow(2).mean()
    assert z_squared < 1.6  # about 1 when both draw from one distribution
    assert (cpu.std(0) - ours.std(0)).abs().mean() < 0.04


# -- batches of an epoch -----------------------------------------------------------------------


def test_device_batches_are_reproducible_from_any_step():
    images = torch.randint(0, 256, (40, 3, H, W), dtype=torch.uint8)
    store = gpu.DecodedImages(images, torch.device("cpu"), "host")
    labels = torch.arange(40) // 4
    batches = [list(range(i, i + 8)) for i in range(0, 40, 8)]
    augment = gpu.BatchAugment(H, W)
    full = list(gpu.DeviceBatches(store, labels, batches, augment, seed=5))
    resumed = list(gpu.DeviceBatches(store, labels, batches, augment, seed=5, first_step=3))
    assert len(full) == 5 and len(resumed) == 2
    for (images_a, labels_a), (images_b, labels_b) in zip(full[3:], resumed, strict=True):
        torch.testing.assert_close(images_a, images_b, rtol=0, atol=0)
        assert labels_a.tolist() == labels_b.tolist()
    assert full[1][1].tolist() == (torch.arange(8, 16) // 4).tolist()
    other_seed = next(iter(gpu.DeviceBatches(store, labels, batches, augment, seed=6)))
    assert not torch.equal(other_seed[0], full[0][0])


# -- training with the gpu pipeline ------------------------------------------------------------


def test_auto_pipeline_is_the_dataloader_on_the_cpu(synthetic, tmp_path):
    assert TrainingRun(tiny_spec(synthetic, tmp_path / "r")).pipeline == "dataloader"


@pytest.mark.slow
def test_gpu_pipeline_learns_and_resumes_mid_epoch_exactly(synthetic, tmp_path, monkeypatch):
    options = ("train.data_pipeline=gpu", "train.validation_interval=2")
    straight = train(tiny_spec(synthetic, tmp_path / "a", *options))
    first, last = straight.history[0], straight.history[-1]
    assert last["loss_total"] < first["loss_total"]
    assert "validation" in last

    run = TrainingRun(tiny_spec(synthetic, tmp_path / "b", *options))
    steps = []
    real_step = trainer_module.train_step

    def step_then_signal(parts, images, labels):
        steps.append(1)
        if len(steps) == 3:  # SIGTERM during the third step of epoch 1
            run.stop_signal = signal.SIGTERM
        return real_step(parts, images, labels)

    monkeypatch.setattr(trainer_module, "train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted):
        run.fit()
    resumed = train(tiny_spec(synthetic, tmp_path / "b", *options))
    assert resumed.history[-1]["loss_total"] == pytest.approx(last["loss_total"], rel=1e-5)
    weights_a = ckpt.load_checkpoint(straight.last_checkpoint)["model"]
    weights_b = ckpt.load_checkpoint(resumed.last_checkpoint)["model"]
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def compiler_raising(error: BaseException):
    """A stand-in for torch.compile whose compiled module raises `error` when called."""

    def compile_(model, **_):
        def compiled(*args, **kwargs):
            raise error

        return compiled

    return compile_


@pytest.mark.slow
def test_failed_compilation_falls_back_to_eager(synthetic, tmp_path, monkeypatch, caplog):
    from torch._inductor.exc import InductorError

    calls = []

    def broken_compile(model, **_):
        def compiled(*args, **kwargs):
            calls.append(1)
            raise InductorError(RuntimeError("no working C++ compiler"), None)

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    spec = tiny_spec(synthetic, tmp_path / "r", "train.compile=true", "train.num_epochs=1")
    with caplog.at_level(logging.WARNING, logger="reidnet.training.trainer"):
        result = train(spec)
    assert "torch.compile failed (InductorError: " in caplog.text
    assert "no working C++ compiler" in caplog.text
    assert calls == [1]  # decided once, before the first step; every step ran eager
    assert np.isfinite(result.history[0]["loss_total"])


def test_an_error_that_is_not_a_compilation_error_is_not_swallowed(
    synthetic,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setattr(torch, "compile", compiler_raising(RuntimeError("shape mismatch")))
    spec = tiny_spec(synthetic, tmp_path / "r", "train.compile=true", "train.num_epochs=1")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train(spec)


def test_the_compile_warm_up_leaves_weights_statistics_and_gradients_as_they_were():
    from reidnet.training.step import compiled_or_eager

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, images):
            out = self.body(images)
            return out.mean((2, 3)), out.amax((2, 3))

    net = TwoOutputs().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    monkey = []
    original = torch.compile
    try:
        torch.compile = lambda module, **_: monkey.append(module) or module  # eager "compiler"
        chosen = compiled_or_eager(net, (2, 3, 8, 8), torch.device("cpu"), amp=False)
    finally:
        torch.compile = original
    assert chosen is net and monkey == [net] and not net.training
    for name, value in net.state_dict().items():  # BatchNorm's running stats are restored
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert all(p.grad is None for p in net.parameters())


def test_a_first_step_out_of_gpu_memory_says_what_to_lower_and_writes_nothing(
    synthetic, tmp_path, monkeypatch
):
    out_of_memory = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(torch, "compile", compiler_raising(out_of_memory))
    spec = tiny_spec(
        synthetic, tmp_path / "r", "train.compile=true", "train.num_epochs=1", "train.amp=false"
    )
    with pytest.raises(ReidnetError) as info:
        train(spec)
    message = str(info.value)
    assert "one training step of 16 images at 32x16 does not fit" in message
    for key in ("dataset.batch_size", "model.input_height", "train.amp=true"):
        assert key in message
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert not list((tmp_path / "r").rglob("*.pth"))  # no checkpoint was written
