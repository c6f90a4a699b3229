"""Reading weight files safely: only data is unpickled (`weights_only`, plus numpy arrays), TAO's
encrypted files are refused by name, and wrapper prefixes ("module.", "base.", ...) are stripped."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from reidnet.errors import ReidnetError

# Prefixes that wrappers put in front of the trunk's own keys: DDP ("module."), the reference's
# Baseline ("base."), Lightning modules ("model."), torch.compile ("_orig_mod."), other toolkits.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "base.")

def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.pth`` state dict or of a checkpoint dict that nests one.

    Checkpoints are unwrapped through their "state_dict" / "model" entries (reidnet, Lightning,
    TAO and most training scripts save one of these). Non-tensor entries are dropped. Only data
    is unpickled (``weights_only``, plus numpy arrays): a file that needs arbitrary code is
    refused.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_numpy_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ReidnetError(f"checkpoint {str(path)!r} does not exist.") from None
    except Exception as exc:
        raise ReidnetError(
            f"cannot read {str(path)!r} as a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). If it is a checkpoint holding "
            f"Python objects from a source you trust, re-save only its state dict with "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], new_path)."
        ) from exc
    refuse_encrypted(content, path)
    content = _unwrap_checkpoint(content)
    if not isinstance(content, Mapping):
        raise ReidnetError(
            f"{str(path)!r} holds a {type(content).__name__}, not a state dict of tensors."
        )
    return {key: value for key, value in content.items() if isinstance(value, torch.Tensor)}


def safe_numpy_globals() -> list[object]:
    """What unpickling plain numpy arrays and scalars needs (training checkpoints store the
    numpy RNG state and metric values); data only, nothing that runs code."""
    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    dtype_classes = [getattr(dtypes, name) for name in dtypes.__all__] if dtypes else []
    return [reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def _unwrap_checkpoint(content: object) -> object:
    """Descend through "state_dict" / "model" entries until the tensors are reached."""
    while isinstance(content, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
        else:
            return content
    return content


def strip_wrapper_prefixes(key: str, prefixes: tuple[str, ...] = _WRAPPER_PREFIXES) -> str:
    """Remove every leading wrapper prefix ("module.", "base.", ...) from a state-dict key."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key



def refuse_encrypted(content: object, path: str | Path) -> None:
    """TAO stores the state dict encrypted (as bytes) when the spec sets `encryption_key`."""
    if not isinstance(content, Mapping):
        return
    if content.get("state_dict_encrypted") or isinstance(
        content.get("state_dict"), bytes | bytearray
    ):
        raise ReidnetError(
            f"{path} is an encrypted TAO checkpoint (state_dict_encrypted: true): TAO encrypted "
            "it with the encryption_key of the spec it was trained with, and reidnet does not "
            "decrypt TAO files. Get a plain one in TAO: train or re-save without "
            "encryption_key, or run `tao model re_identification export` there and convert the "
            "ONNX with `reidnet convert model.onnx model.pth`."
        )
