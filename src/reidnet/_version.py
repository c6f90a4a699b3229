"""reidnet's version, in a module that imports nothing: checkpoints, run records, ONNX metadata
and the service stamp it without importing the package face (which reaches the actions), and
pyproject.toml reads it from here, so it is written once."""

__version__ = "0.1.0"
