"""reidnet: person and object re-identification, from data to deployment.

Importing the package stays light: heavy modules (torch models, plots, the REST service) are
imported by the functions that need them.
"""

__version__ = "0.1.0"

from reidnet.errors import ReidnetError

__all__ = ["Embedder", "ReidnetError", "__version__"]


def __getattr__(name: str):
    # `reidnet.Embedder` imports torch and onnxruntime on first use, not at `import reidnet`.
    if name == "Embedder":
        from reidnet.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'reidnet' has no attribute {name!r}")
