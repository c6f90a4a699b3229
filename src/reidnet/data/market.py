"""Market-1501-layout folders: file-name parsing, records, training identities and statistics.

A folder is flat; an image's base name starts with `PPPP_cC` (person id, camera). pid -1 marks junk
boxes and is skipped, pid 0 marks distractors (kept in galleries as negatives, left out of
training). Unlike the reference, the pattern runs on the base name only, accepts a minus sign and
any of jpg/jpeg/png/bmp in any case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reidnet.errors import ReidnetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MARKET_NAME = re.compile(r"([-\d]+)_c(\d+)")
JUNK_PID = -1
DISTRACTOR_PID = 0
# Written by `reidnet dataset synth` into the dataset root, beside bounding_box_train, ...: the
# images of a folder that holds this file, or whose parent does, count as synthetic in every
# statistic, tagged or not.
SYNTHETIC_MARKER = ".reidnet-synthetic"

# Sub-folder names of a dataset root: Market-1501's and TAO's sample data.
SPLIT_FOLDER_NAMES = {
    "train": ("bounding_box_train", "sample_train"),
    "test": ("bounding_box_test", "sample_test"),
    "query": ("query", "sample_query"),
}


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image: where it is, who it shows, which camera saw it and where the data came from."""

    path: Path
    pid: int
    camid: int
    source: str = "real"


@dataclass
class FolderScan:
    """What one flat folder holds: usable records and the files that were left out."""

    folder: Path
    records: list[ImageRecord] = field(default_factory=list)
    junk: list[Path] = field(default_factory=list)
    unparseable: list[Path] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)


def parse_market_name(name: str) -> tuple[int, int] | None:
    """(pid, camera) from a file's base name, or None when it does not follow Market naming.

    >>> parse_market_name("0002_c1s1_000451_03.jpg")
    (2, 1)
    >>> parse_market_name("-1_c12s2_000100_00.png")
    (-1, 12)
    """
    match = MARKET_NAME.search(Path(name).name)
    if match is None:
        return None
    try:
        pid = int(match.group(1))
    except ValueError:
        return None
    if pid < JUNK_PID:
        return None
    return pid, int(match.group(2))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_synthetic_folder(folder: str | Path) -> bool:
    """Whether the folder, or the dataset root above it, holds the SYNTHETIC_MARKER file."""
    folder = Path(folder)
    return (folder / SYNTHETIC_MARKER).is_file() or (folder.parent / SYNTHETIC_MARKER).is_file()


def scan_folder(folder: str | Path, source: str = "real") -> FolderScan:
    """Read a flat Market-1501 folder into records, sorted by file name.

    Junk (pid -1) is skipped, files whose name does not parse and non-image files are counted,
    sub-folders are ignored. A folder marked synthetic (`is_synthetic_folder`) is synthetic
    whatever `source` says; any other folder is what `source` (its spec tag, default real) says.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReidnetError(
            f"dataset folder {folder} does not exist or is not a folder: check the path "
            "(dataset.train_dataset_dir / test_dataset_dir / query_dataset_dir)"
        )
    if is_synthetic_folder(folder):
        source = "synthetic"
    scan = FolderScan(folder=folder)
    files = (p for p in folder.iterdir() if not p.is_dir() and p.name != SYNTHETIC_MARKER)
    for path in sorted(files):
        if not is_image_file(path):
            scan.non_images.append(path)
            continue
        parsed = parse_market_name(path.name)
        if parsed is None:
            scan.unparseable.append(path)
        elif parsed[0] == JUNK_PID:
            scan.junk.append(path)
        else:
            scan.records.append(ImageRecord(path, parsed[0], parsed[1], source))
    return scan


def read_records(folder: str | Path, source: str = "real") -> list[ImageRecord]:
    """The usable images of a folder (query or gallery), distractors included."""
    scan = scan_folder(folder, source)
    if not scan.records:
        raise ReidnetError(
            f"{folder} holds no usable image named like Market-1501 (PPPP_cC..., e.g. "
            f"0002_c1s1_000451_03.jpg): {len(scan.unparseable)} unparseable names, "
            f"{len(scan.junk)} junk (-1) images, {len(scan.non_images)} other files"
        )
    return scan.records


def find_split_folders(root: str | Path) -> dict[str, Path]:
    """The train/test/query sub-folders of a dataset root, by Market's or TAO's names."""
    root = Path(root)
    found = {}
    for split, names in SPLIT_FOLDER_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


@dataclass
class TrainSet:
    """Training records with class labels 0..N-1 and the identity behind each label.

    An identity key is `<identity_group>:<pid>`, where the group is the folder's
    `identity_group` or, by default, the folder itself: pids of different folders never collide.
    """

    records: list[ImageRecord]
    labels: list[int]
    identity_keys: list[str]
    camera_keys: list[str]
    skipped_distractors: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.identity_keys)


def build_train_set(folders: Sequence, existing_keys: Sequence[str] = ()) -> TrainSet:
    """Relabel the identities of one or more training folders as 0..N-1.

    `folders` holds `reidnet.config.TrainFolder` entries (path, source, identity_group) or plain
    paths. Identities already in `existing_keys` keep their label (a resumed run keeps its
    classifier rows); new identities get the next labels in sorted order.
    """
    if not folders:
        raise ReidnetError(
            "no training data: set dataset.train_dataset_dir to a Market-1501 "
            "bounding_box_train folder (or a list of folders)"
        )
    key_to_label = {key: label for label, key in enumerate(existing_keys)}
    records: list[ImageRecord] = []
    record_keys: list[str] = []
    camera_keys: list[str] = []
    skipped = 0
    for entry in folders:
        path, source, group = folder_fields(entry)
        scan = scan_folder(path, source)
        for record in scan.records:
            if record.pid == DISTRACTOR_PID:
                skipped += 1
                continue
            records.append(record)
            record_keys.append(f"{group}:{record.pid}")
            camera_keys.append(f"{group}:{record.camid}")
    if not records:
        names = ", ".join(str(folder_fields(f)[0]) for f in folders)
        raise ReidnetError(f"no usable training image in {names}: run `reidnet dataset validate`")
    new_keys = sorted(set(record_keys) - key_to_label.keys(), key=_identity_sort_key)
    for key in new_keys:
        key_to_label[key] = len(key_to_label)
    identity_keys = [""] * len(key_to_label)
    for key, label in key_to_label.items():
        identity_keys[label] = key
    labels = [key_to_label[key] for key in record_keys]
    return TrainSet(records, labels, identity_keys, camera_keys, skipped)


def folder_fields(entry) -> tuple[Path, str, str]:
    if isinstance(entry, (str, Path)):
        path = Path(entry)
        return path, "real", str(path.resolve())
    path = Path(entry.path)
    return path, entry.source, entry.identity_group or str(path.resolve())


def _identity_sort_key(key: str) -> tuple[str, int]:
    group, _, pid = key.rpartition(":")
    return group, int(pid)


# ---------------------------------------------------------------------------------------------
# Statistics (the table of the reference docs, split by data source)


@dataclass(frozen=True)
class SubsetCounts:
    identities: int
    images: int
    cameras: int

    def as_dict(self) -> dict[str, int]:
        return {"identities": self.identities, "images": self.images, "cameras": self.cameras}


def count_subset(
    records: Iterable[ImageRecord],
    identity_keys: Iterable[str] | None = None,
    camera_keys: Iterable[str] | None = None,
) -> dict[str, SubsetCounts]:
    """Identities, images and cameras in total and per source ("real", "synthetic").

    Distractors (pid 0) count as images but not as identities.
    """
    records = list(records)
    ids = list(identity_keys) if identity_keys is not None else [str(r.pid) for r in records]
    cams = list(camera_keys) if camera_keys is not None else [str(r.camid) for r in records]
    result = {}
    for source in ("total", "real", "synthetic"):
        chosen = [i for i, r in enumerate(records) if source in ("total", r.source)]
        identities = {ids[i] for i in chosen if records[i].pid != DISTRACTOR_PID}
        result[source] = SubsetCounts(len(identities), len(chosen), len({cams[i] for i in chosen}))
    return result


def dataset_stats(
    train_folders: Sequence = (),
    test_dir: str | Path | None = None,
    query_dir: str | Path | None = None,
    test_source: str = "real",
    query_source: str = "real",
) -> dict[str, dict[str, SubsetCounts]]:
    """Per subset (train, query, test), counts in total and split into real and synthetic.

    A folder's images are synthetic when it (or its parent) holds SYNTHETIC_MARKER or when it is
    tagged synthetic.
    """
    stats: dict[str, dict[str, SubsetCounts]] = {}
    if train_folders:
        train = build_train_set(train_folders)
        stats["train"] = count_subset(
            train.records, _record_identity_keys(train), train.camera_keys
        )
    if query_dir is not None:
        stats["query"] = count_subset(read_records(query_dir, query_source))
    if test_dir is not None:
        stats["test"] = count_subset(read_records(test_dir, test_source))
    if not stats:
        raise ReidnetError("no dataset folder given: pass --train, --test and/or --query, or -e")
    return stats


def _record_identity_keys(train: TrainSet) -> list[str]:
    return [train.identity_keys[label] for label in train.labels]
