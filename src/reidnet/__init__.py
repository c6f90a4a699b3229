"""reidnet: person and object re-identification, from data to deployment.

Importing the package stays light: heavy modules (torch models, plots, the REST service) are
imported by the functions that need them.
"""

__version__ = "0.1.0"

from reidnet.errors import ReidnetError

__all__ = ["ReidnetError", "__version__"]
