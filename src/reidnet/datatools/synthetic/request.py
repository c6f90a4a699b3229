"""The arguments of one synthetic dataset, checked before anything is written.

Each bound is a pydantic `Field` (or, where it moves with `identities`, a validator), and a value
outside it is refused with a ReidnetError that names the argument, the allowed range and why.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from reidnet.errors import ReidnetError

MIN_SIZE = (32, 16)
MAX_CAMERAS = 99
MAX_PER_PID = 100_000
MAX_PID = 9999  # Market-1501 names have 4 digits; pid 0 is a distractor


def _whole_number(value: object) -> int:
    """What the generator counts with: an int (numpy's too), not pydantic's lax 3.0 or "3"."""
    try:
        return operator.index(value)
    except TypeError:
        raise PydanticCustomError("whole_number", "not a whole number") from None


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
# The highest value of an argument whose range moves with `identities`: train keeps one person,
# and the last pid keeps 4 digits.
_MOVING_BOUNDS = {
    "test_identities": lambda identities: identities - 1,
    "first_pid": lambda identities: MAX_PID + 1 - identities,
}


class SyntheticRequest(BaseModel):
    """The arguments of one generate_synthetic_dataset call, defaults resolved."""

    model_config = ConfigDict(frozen=True)

    identities: WholeNumber = Field(ge=2, description="one for train, one for test")
    test_identities: WholeNumber = Field(
        ge=1, description="so that train and test both have people"
    )
    cameras: WholeNumber = Field(
        ge=2,
        le=MAX_CAMERAS,
        description=f"re-identification needs two cameras; Market-1501 names allow {MAX_CAMERAS}",
    )
    images_per_identity: WholeNumber = Field(
        ge=2, le=MAX_PER_PID, description="each person needs two images, in two cameras"
    )
    size: tuple[
        Annotated[WholeNumber, Field(ge=MIN_SIZE[0])],
        Annotated[WholeNumber, Field(ge=MIN_SIZE[1])],
    ] = Field(description="for a person to be drawn; e.g. 128 by 64")
    seed: WholeNumber = Field(ge=0)
    first_pid: WholeNumber = Field(
        ge=1,
        description=f"pids stay within 1..{MAX_PID}: 4 digits, and 0 means distractor",
    )
    distractors: WholeNumber = Field(ge=0, le=MAX_PER_PID)
    workers: WholeNumber = Field(ge=1)

    @field_validator(*_MOVING_BOUNDS)
    @classmethod
    def _fits_identities(cls, value: int, info: ValidationInfo) -> int:
        """The bounds that move with `identities` (absent when it was refused itself)."""
        identities = info.data.get("identities")
        if identities is not None and value > _MOVING_BOUNDS[info.field_name](identities):
            raise PydanticCustomError("too_large", "above its range")
        return value

    @classmethod
    def from_arguments(cls, **arguments: Any) -> SyntheticRequest:
        """The request, or a ReidnetError about the first argument out of its range."""
        try:
            return cls(**arguments)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
        name = str(first["loc"][0])
        field = cls.model_fields[name]
        if first["type"] == "whole_number":
            allowed = "a whole number"
        elif name == "size":
            allowed = f"(height, width) of at least {MIN_SIZE}"
        elif name in _MOVING_BOUNDS:  # so `identities` was accepted
            allowed = _range(field, _MOVING_BOUNDS[name](operator.index(arguments["identities"])))
        else:
            allowed = _range(field)
        why = f" ({field.description})" if field.description else ""
        raise ReidnetError(f"{name}={arguments.get(name)!r}: must be {allowed}{why}")


def _range(field: FieldInfo, highest: int | None = None) -> str:
    """`between 2 and 99` or `0 or more`, from the field's ge/le bounds."""
    lowest = next(m.ge for m in field.metadata if hasattr(m, "ge"))
    if highest is None:
        highest = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    return f"{lowest} or more" if highest is None else f"between {lowest} and {highest}"
