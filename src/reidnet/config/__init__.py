"""The experiment spec (see `reidnet.config.schema`), under the name every importer uses."""

from reidnet.config.schema import *  # noqa: F403
