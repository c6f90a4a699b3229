"""The experiment spec: TAO-compatible YAML sections as pydantic models, overrides and the schema.

A TAO 5.x/6.x `re_identification` spec loads unchanged. Every error names the key path, what was
expected and, for unknown keys, the closest valid key. The package's modules, each one job:

* `schema`: the sections as pydantic models, their bounds and combination rules;
* `compat`: the keys accepted only so TAO files load, warned about when set;
* `loading`: a spec from a file, a dict and `key=value` overrides (`overrides`), with the relative
  paths of a file resolved from its folder (`paths`);
* `yaml_guard`: YAML that refuses alias bombs; `errors`: pydantic's errors as messages naming the
  key; `display`: values cut short for messages; `writing`: default specs, dumps, the JSON schema.

Everything a caller needs is importable from here, as it was from the single module before.
"""

from reidnet.config.compat import COMPAT_ONLY_KEYS
from reidnet.config.display import shown, shown_key
from reidnet.config.loading import deep_merge, load_spec, validate_spec
from reidnet.config.overrides import parse_override
from reidnet.config.paths import PATH_KEYS
from reidnet.config.schema import (
    ACTIONS,
    MAX_BATCH,
    MAX_COUNT,
    MAX_DEVICES,
    MAX_EPOCHS,
    MAX_FEAT_DIM,
    MAX_INPUT_SIZE,
    MAX_NEIGHBOURS,
    MAX_PLOT,
    MAX_SEED,
    MAX_WORKERS,
    CuDNNConfig,
    DatasetConfig,
    DeviceId,
    Epoch,
    EvaluateConfig,
    ExperimentSpec,
    ExportConfig,
    InferenceConfig,
    ModelConfig,
    OptimConfig,
    ReRankingConfig,
    TrainConfig,
    TrainFolder,
    WandBConfig,
    compat_only_keys_set,
)
from reidnet.config.writing import (
    default_spec_dict,
    dump_spec,
    spec_json_schema,
    write_default_specs,
)
from reidnet.config.yaml_guard import MAX_YAML_NODES, safe_load_yaml

__all__ = [
    "ACTIONS",
    "COMPAT_ONLY_KEYS",
    "MAX_BATCH",
    "MAX_COUNT",
    "MAX_DEVICES",
    "MAX_EPOCHS",
    "MAX_FEAT_DIM",
    "MAX_INPUT_SIZE",
    "MAX_NEIGHBOURS",
    "MAX_PLOT",
    "MAX_SEED",
    "MAX_WORKERS",
    "MAX_YAML_NODES",
    "PATH_KEYS",
    "CuDNNConfig",
    "DatasetConfig",
    "DeviceId",
    "Epoch",
    "EvaluateConfig",
    "ExperimentSpec",
    "ExportConfig",
    "InferenceConfig",
    "ModelConfig",
    "OptimConfig",
    "ReRankingConfig",
    "TrainConfig",
    "TrainFolder",
    "WandBConfig",
    "compat_only_keys_set",
    "deep_merge",
    "default_spec_dict",
    "dump_spec",
    "load_spec",
    "parse_override",
    "safe_load_yaml",
    "shown",
    "shown_key",
    "spec_json_schema",
    "validate_spec",
    "write_default_specs",
]
