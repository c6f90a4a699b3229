"""reidnet: person and object re-identification, from data to deployment.

    reidnet.train(spec); reidnet.evaluate(spec); reidnet.inference(spec); reidnet.export(spec)
    reidnet.Embedder.from_file("reid_model.onnx").embed(["a.jpg"])

Importing the package stays light: the actions and the Embedder (torch, onnxruntime) are
imported on first use, not at `import reidnet`.
"""

from reidnet._version import __version__
from reidnet.contracts import ACTIONS
from reidnet.errors import ReidnetError

__all__ = ["Embedder", "ReidnetError", "__version__", *ACTIONS]


def __getattr__(name: str):
    if name in ACTIONS:
        from reidnet import actions

        return getattr(actions, name)
    if name == "Embedder":
        from reidnet.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'reidnet' has no attribute {name!r}")
