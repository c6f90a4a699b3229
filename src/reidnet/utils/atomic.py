"""Atomic file writes: a crash or kill at any moment leaves the previous file or the new one, never
a torn one; a full disk is a ReidnetError that says so, with the size needed and the space left.

Torch is imported only by the writers that need it, so the service can use the text writers.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reidnet.errors import ReidnetError, exception_chain


def atomic_torch_save(payload: Any, path: str | Path, what: str = "the checkpoint") -> Path:
    """Write with torch.save to a temporary file, fsync it, then rename over `path`.

    A crash or kill at any moment leaves either the previous file or the new one, never a torn
    file: rename is atomic within a folder and the data is on disk before it. A full disk is a
    ReidnetError naming `what`, the size and the free space.
    """
    import torch

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
    import torch

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
