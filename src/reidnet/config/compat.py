"""The spec keys accepted only so TAO files load, each with the reason it does nothing here."""

from __future__ import annotations

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
