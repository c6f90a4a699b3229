"""Checkpoints read back: a reidnet or TAO file checked and loaded, its network rebuilt, and its
disagreements with a spec reported (the header is written by `contracts.checkpoint_header`).

A checkpoint records the architecture, the identity map (class label -> identity key), the input
size and the normalisation next to the weights, so evaluate, inference and export never need
`dataset.num_classes` or the model section repeated by hand (the reference's trap).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from reidnet.contracts import ARCHITECTURE_FIELDS, CHECKPOINT_FORMAT, Architecture
from reidnet.errors import ReidnetError
from reidnet.model.weights import refuse_encrypted, safe_numpy_globals

logger = logging.getLogger(__name__)


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
    try:  # data only: a checkpoint never runs code when it is read
        with torch.serialization.safe_globals(safe_numpy_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ReidnetError(
            f"checkpoint {path} cannot be read ({_first_line(error)}); it may be truncated or "
            "not a PyTorch file: give a file written by `reidnet train`, TAO's .pth / .tlt, or "
            "`reidnet convert` of an ONNX model"
        ) from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        # Checked here, so every later reader may trust it; older files gain their defaults.
        payload["architecture"] = Architecture.from_checkpoint(payload, path).to_dict()
        return payload
    from reidnet.model.tao import checkpoint_from_tao

    refuse_encrypted(payload, path)
    if spec is None:
        from reidnet.config import ExperimentSpec

        spec = ExperimentSpec()
    converted = checkpoint_from_tao(payload, path, spec) if isinstance(payload, dict) else None
    if converted is None:
        raise ReidnetError(
            f"{path} is neither a reidnet checkpoint (no '{CHECKPOINT_FORMAT}' marker) nor a TAO "
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


def model_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | None = None):
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode)."""
    from reidnet.model import ReIdentificationNet

    architecture = Architecture.from_checkpoint(checkpoint)
    model = ReIdentificationNet.from_architecture(architecture, checkpoint["num_classes"])
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
