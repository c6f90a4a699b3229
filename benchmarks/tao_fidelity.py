"""How closely reidnet reproduces TAO's network, path by path, at TAO's 256x128 input.

The reference is the TAO network written from TAO's facts in tests/test_tao_fidelity.py (random
weights, BatchNorm statistics calibrated on its own activations). For each path — TAO's `.pth`
read directly, reidnet's ONNX export of it run by onnxruntime, and `reidnet convert` of a
TAO-style ONNX export with and without BatchNorm folded — it prints max |diff| against the
reference, relative to the largest reference value, and the minimum centred cosine (the cosine
after subtracting the reference's mean embedding: random networks send every image in nearly one
direction, so a plain cosine would pass a wrong network). The baseline row is the same weights in
torchvision's network (stem ReLU), which is what reidnet computed before.

    python benchmarks/tao_fidelity.py [--images 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_tao_fidelity as ref
from reidnet.actions import export
from reidnet.config import load_spec
from reidnet.convert import convert
from reidnet.runtime import checkpoint as ckpt

CASES = [((3, 4, 6, 3), 256, "resnet_50"), ((2, 2, 2, 2), 128, "resnet_18 (Bottleneck)")]


def compare(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    diff = float(np.abs(ours - reference).max())
    return (
        diff,
        diff / float(np.abs(reference).max()),
        float(ref._centred_cosines(ours, reference).min()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    ref.HEIGHT, ref.WIDTH = 256, 128
    images = ref._images(args.images)
    rows = []
    for layers, feat_dim, label in CASES:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            model = ref._calibrated(layers, feat_dim)
            with torch.no_grad():
                reference = model(images).numpy()
            pth = folder / "tao.pth"
            ref._save_lightning(model, pth)
            spec = load_spec(None, [f"results_dir={folder / 'results'}"])
            start = time.perf_counter()
            checkpoint = ckpt.load_checkpoint(pth, "evaluate.checkpoint", spec)
            rows.append(
                (
                    label,
                    feat_dim,
                    "TAO .pth",
                    *compare(ref._reidnet_embeddings(checkpoint, images), reference),
                )
            )
            relu = ckpt.model_from_checkpoint(checkpoint)
            relu.backbone.bn1.register_forward_hook(lambda _m, _i, out: torch.relu(out))
            with torch.no_grad():
                rows.append(
                    (
                        label,
                        feat_dim,
                        "baseline: torchvision stem (ReLU)",
                        *compare(relu(images).numpy(), reference),
                    )
                )
            spec.export.checkpoint = str(pth)
            exported = export(spec).onnx_file
            session = onnxruntime.InferenceSession(str(exported))
            rows.append(
                (
                    label,
                    feat_dim,
                    "reidnet export -> onnxruntime",
                    *compare(session.run(["fc_pred"], {"input": images.numpy()})[0], reference),
                )
            )
            for fold in (True, False):
                onnx_file = folder / f"tao-{fold}.onnx"
                ref._export_onnx(model, onnx_file, fold)
                target, _ = convert(onnx_file, folder / f"conv-{fold}.pth", spec)
                ours = ref._reidnet_embeddings(ckpt.load_checkpoint(target), images)
                name = "convert ONNX, BN folded" if fold else "convert ONNX, BN separate"
                rows.append((label, feat_dim, name, *compare(ours, reference)))
            print(f"{label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print("| network | feat_dim | path | max abs diff | relative | min centred cosine |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for label, feat_dim, path, diff, relative, cosine in rows:
        print(f"| {label} | {feat_dim} | {path} | {diff:.2e} | {relative:.2e} | {cosine:.7f} |")


if __name__ == "__main__":
    main()
