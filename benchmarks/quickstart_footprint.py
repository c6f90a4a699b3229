"""What `reidnet quickstart` leaves on disk, file group by file group, against its 150 MB goal.

Runs the whole tour (the packaged quick-start spec, 12 epochs of a ResNet-18 from scratch on the
CPU: about 10 minutes on 2 cores) in a fresh folder, then prints the bytes of each group and the
metrics it reached with the torch it ran on, so the README's numbers can be checked:

    python benchmarks/quickstart_footprint.py [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from reidnet.quickstart import run_quickstart

GOAL_MB = 150
MB = 1e6


def group_of(path: Path, out: Path) -> str:
    relative = path.relative_to(out)
    if relative.parts[0] == "data":
        return "synthetic dataset"
    if path.suffix == ".pth":
        return f"checkpoint {path.name}"
    if "tensorboard" in relative.parts:
        return "tensorboard"
    return f"{relative.parts[1]}: other files" if len(relative.parts) > 2 else "other files"


def footprint(out: Path) -> dict[str, int]:
    """Bytes per group; a file hard-linked twice (best = the final epoch) counts once."""
    seen: set[tuple[int, int]] = set()
    groups: dict[str, int] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        stat = path.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            groups[group_of(path, out) + " (a link: no space)"] = 0
            continue
        seen.add((stat.st_dev, stat.st_ino))
        groups[group_of(path, out)] = groups.get(group_of(path, out), 0) + stat.st_size
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the tour (default: a new temporary one)"
    )
    parser.add_argument("overrides", nargs="*", help="spec overrides key.sub=value")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="reidnet-qs-")) / "quickstart_out"
    summary = run_quickstart(out, args.overrides)
    groups = footprint(out)
    total = sum(groups.values())
    print(
        f"\nreidnet quickstart in {out}: torch {torch.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print("\n| files | MB |\n| --- | ---: |")
    for name, size in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"| {name} | {size / MB:.1f} |")
    print(f"| **total** | **{total / MB:.1f}** (goal: at most {GOAL_MB}) |")
    metrics = {k: f"{100 * summary.trained[k]:.2f}" for k in ("mAP", "rank-1", "rank-5", "mINP")}
    print(f"\ntrained: {metrics}; untrained mAP {100 * summary.untrained['mAP']:.2f}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary.seconds.items()))
    if total > GOAL_MB * MB:
        raise SystemExit(f"over the goal: {total / MB:.1f} MB > {GOAL_MB} MB")


if __name__ == "__main__":
    main()
