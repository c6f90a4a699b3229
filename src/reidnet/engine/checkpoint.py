"""Checkpoints: atomic writes, and everything needed to rebuild, resume or deploy a model.

A checkpoint records the architecture, the identity map (class label -> identity key), the input
size and the normalisation next to the weights, so evaluate, inference and export never need
`dataset.num_classes` or the model section repeated by hand (the reference's trap).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from reidnet._version import __version__
from reidnet.contracts import ARCHITECTURE_FIELDS, Architecture
from reidnet.errors import ReidnetError, exception_chain

logger = logging.getLogger(__name__)

FORMAT = "reidnet-checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(payload: Any, path: str | Path, what: str = "the checkpoint") -> Path:
    """Write with torch.save to a temporary file, fsync it, then rename over `path`.

    A crash or kill at any moment leaves either the previous file or the new one, never a torn
    file: rename is atomic within a folder and the data is on disk before it. A full disk is a
    ReidnetError naming `what`, the size and the free space.
    """
    path = Path(path)
    with full_disk_reported(what, path, tensor_bytes(payload)):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so readers never see a half-written file."""
    with full_disk_reported("the file", path, len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(text)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


_FULL_DISK = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}


@contextmanager
def full_disk_reported(
    what: str, path: Path, needed_bytes: int | None = None, atomic: bool = True
) -> Iterator[None]:
    """A full disk (or quota) while writing `path` becomes a ReidnetError that says so, with
    the size the write needed and the space left, instead of a traceback.

    An `atomic` block (temporary file, then rename) removes its partial file before leaving,
    so the space reported is what is left and the file at `path` is the previous one.
    """
    try:
        yield
    except Exception as error:
        full = out_of_space(error)
        if full is None:
            raise
        needed = f"it needed about {_size(needed_bytes)}, " if needed_bytes else ""
        try:
            free = _size(shutil.disk_usage(path.parent).free)
        except OSError:
            free = "an unknown amount"
        intact = f"any earlier {path.name} is intact; " if atomic else ""
        raise ReidnetError(
            f"{_FULL_DISK[full.errno]} writing {what} ({path.name}): {needed}{free} free on the "
            f"file system of {path.parent}; {intact}free some space there and run again"
        ) from error


def out_of_space(error: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT error behind `error`, if any: torch.save reports a full disk as a
    RuntimeError of its zip writer raised while handling the OSError."""
    return next(
        (e for e in exception_chain(error) if isinstance(e, OSError) and e.errno in _FULL_DISK),
        None,
    )


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint payload: about its size on disk."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def atomic_link(source: Path, target: Path) -> None:
    """Point `target` at `source`'s content atomically (hard link, else a copy): the latest
    checkpoint costs no second write."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(
    path: str | Path, key: str = "evaluate.checkpoint", spec=None
) -> dict[str, Any]:
    """Read a reidnet checkpoint, with an error naming the spec key when it is missing or bad.

    A TAO checkpoint (Lightning `.pth` or trainable `.tlt`, recognised by its key layout) is read
    as the reidnet checkpoint of TAO's network; what its weights do not fix comes from `spec`
    (TAO's defaults when None).
    """
    path = Path(path) if path else None
    if path is None:
        raise ReidnetError(f"no checkpoint given: set {key}=/path/to/model_epoch_NNN.pth")
    if not path.is_file():
        raise ReidnetError(f"checkpoint {path} does not exist: check {key}")
    from reidnet.model.backbone import safe_numpy_globals

    try:  # data only: a checkpoint never runs code when it is read
        with torch.serialization.safe_globals(safe_numpy_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ReidnetError(
            f"checkpoint {path} cannot be read ({_first_line(error)}); it may be truncated or "
            "not a PyTorch file: give a file written by `reidnet train`, TAO's .pth / .tlt, or "
            "`reidnet convert` of an ONNX model"
        ) from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        # Checked here, so every later reader may trust it; older files gain their defaults.
        payload["architecture"] = Architecture.from_checkpoint(payload, path).to_dict()
        return payload
    from reidnet.model.tao import checkpoint_from_tao, refuse_encrypted

    refuse_encrypted(payload, path)
    if spec is None:
        from reidnet.config import ExperimentSpec

        spec = ExperimentSpec()
    converted = checkpoint_from_tao(payload, path, spec) if isinstance(payload, dict) else None
    if converted is None:
        raise ReidnetError(
            f"{path} is neither a reidnet checkpoint (no '{FORMAT}' marker) nor a TAO "
            "ReIdentificationNet checkpoint: give a file written by `reidnet train` "
            "(model_epoch_NNN.pth or reid_model_latest.pth), or TAO's .pth / .tlt"
        )
    return converted


def _first_line(error: BaseException) -> str:
    """The error's type and first line: PyTorch's weights_only errors append a long paragraph
    of advice (re-running with weights_only=False) that is wrong for a damaged file."""
    import pickle

    if isinstance(error, pickle.UnpicklingError):
        return "it holds Python objects beyond tensors and numbers, which are never unpickled"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0].split('. ')[0]}" if text else type(error).__name__


def report_spec_disagreements(checkpoint: dict[str, Any], spec, path: str | Path) -> None:
    """The checkpoint is the truth for the model: for each value the spec sets explicitly that
    the checkpoint was not trained with, one warning naming both (the checkpoint's is used)."""
    architecture = Architecture.from_checkpoint(checkpoint, path)
    sections = {"model": spec.model, "dataset": spec.dataset}
    fields = [("model", field) for field in ARCHITECTURE_FIELDS]
    fields += [("model", "input_height"), ("model", "input_width")]
    fields += [("dataset", "pixel_mean"), ("dataset", "pixel_std")]
    for section, field in fields:
        if field == "backbone" and architecture.network == "tao":
            continue  # TAO's resnet_34 and resnet_50 are one network: either name is right
        config = sections[section]
        if field not in config.model_fields_set:
            continue
        stated, trained = getattr(config, field), getattr(architecture, field)
        if isinstance(stated, (list, tuple)):
            stated, trained = [float(v) for v in stated], [float(v) for v in trained]
        if stated != trained:
            logger.warning(
                "%s.%s is %r in the spec but checkpoint %s was trained with %r: using %r",
                section,
                field,
                stated,
                path,
                trained,
                trained,
            )


def capture_rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_header(
    *, epoch: int, spec_dict: dict, identity_keys: list[str], architecture: Architecture
) -> dict[str, Any]:
    """The metadata part of a checkpoint; the trainer adds weights and optimizer states."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "reidnet_version": __version__,
        "epoch": epoch,
        "spec": spec_dict,
        "identity_keys": list(identity_keys),
        "num_classes": len(identity_keys),
        "architecture": architecture.to_dict(),
    }


def model_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | None = None):
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode)."""
    from reidnet.model import ReIdentificationNet

    architecture = Architecture.from_checkpoint(checkpoint)
    model = ReIdentificationNet(
        architecture.backbone,
        num_classes=checkpoint["num_classes"],
        last_stride=architecture.last_stride,
        feat_dim=architecture.feat_dim,
        neck=architecture.neck,
        neck_feat=architecture.neck_feat,
        with_flip_feature=architecture.with_flip_feature,
        pretrain_choice="none",
        network=architecture.network,
    )
    result = model.load_state_dict(checkpoint["model"], strict=False)
    # Only BatchNorm step counters may be absent (older files, converted graphs); anything else
    # missing or left over means the weights are not this network's.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ReidnetError(
            f"the checkpoint's weights do not fit its recorded architecture "
            f"({architecture.to_dict()}): "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}; the file is "
            "damaged or was edited"
        )
    return model.to(device or torch.device("cpu")).eval()
