"""Values and keys as error messages show them: cut short, so no message echoes a huge value."""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60


def shown(value: Any, limit: int = 120) -> str:
    """`repr(value)` cut to `limit` characters: error messages never echo a huge value whole."""
    # reprlib bounds the depth and width of containers (a 500-deep spec would overflow repr)
    text = repr(value) if isinstance(value, (str, bytes)) else _SHORT_REPR.repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


def shown_key(key: str, limit: int = 120) -> str:
    """A (user-chosen) key name cut to `limit` characters."""
    return key if len(key) <= limit else f"{key[:limit]}... ({len(key)} characters)"
