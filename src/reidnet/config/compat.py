"""The spec keys accepted only so TAO files load: what each one would have done elsewhere, and
which of them a spec sets to something other than the default (warned about when it loads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidnet.config.schema import ExperimentSpec

_SWIN_ONLY = "is read only by TAO's transformer ReID variant: it has no effect in reidnet"
_SINGLE_DEVICE = "reidnet evaluates, infers and exports on one device (gpu_id): it has no effect"
# Keys the spec accepts so TAO files load, and that change nothing here: a value other than the
# default is warned about when the spec loads. docs/SPEC.md lists them.
COMPAT_ONLY_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": (
        _SWIN_ONLY,
        (
            "pretrain_hw_ratio",
            "id_loss_type",
            "cos_layer",
            "dropout_rate",
            "reduce_feat_dim",
            "drop_path",
            "drop_out",
            "att_drop_rate",
            "stride_size",
            "gem_pooling",
            "stem_conv",
            "jpm",
            "shift_num",
            "shuffle_group",
            "devide_length",
            "re_arrange",
            "sie_coe",
            "sie_camera",
            "sie_view",
            "semantic_weight",
        ),
    ),
    "train.optim": (_SWIN_ONLY, ("cosine_margin", "cosine_scale", "trp_l2")),
    "evaluate": (_SINGLE_DEVICE, ("num_gpus", "gpu_ids", "num_nodes")),
    "inference": (_SINGLE_DEVICE, ("num_gpus", "gpu_ids", "num_nodes")),
    "export": ("export runs on the CPU: it has no effect", ("gpu_id",)),
    "": (
        "reidnet never encrypts checkpoints and cannot decrypt TAO's: it has no effect",
        ("encryption_key",),
    ),
}


def compat_only_keys_set(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """(dotted key, why it does nothing) for each compatibility-only key set to a non-default."""
    found = []
    for path, (reason, names) in COMPAT_ONLY_KEYS.items():
        section = spec
        for part in filter(None, path.split(".")):
            section = getattr(section, part)
        fields = type(section).model_fields
        for name in names:
            if getattr(section, name) != fields[name].get_default(call_default_factory=True):
                found.append((f"{path}.{name}" if path else name, reason))
    if "wandb" in spec.model_fields_set and spec.wandb.enable:
        found.append(("wandb", "reidnet logs to TensorBoard and metrics.jsonl, not to W&B"))
    if spec.train.optim.lr_monitor != "val_loss":
        found.append(("train.optim.lr_monitor", "no schedule in reidnet reads a monitored metric"))
    return found
