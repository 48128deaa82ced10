"""Strict JSON for untrusted input: a duplicate member name or NaN/Infinity is an error, not a guess.

Readers disagree on which of two equal member names wins, so a document with one can mean one
thing to ztid and another to the next tool (JSON interoperability, RFC 8259 §4). Every ztid parser
of untrusted JSON (bundles, JWT-SVIDs, signatures, manifests) decodes through :func:`loads` and
translates its ``ValueError`` into its own typed error.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["loads"]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON member {key[:80]!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def loads(text: str) -> Any:
    """Decode ``text`` strictly.

    Raises:
        ValueError: malformed JSON (``json.JSONDecodeError``), a duplicate member name, NaN or Infinity.
        RecursionError: nesting deeper than the interpreter allows.
    """
    return _DECODER.decode(text)
