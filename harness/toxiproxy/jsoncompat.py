"""JSON decoding and encoding with the quirks that Toxiproxy clients can observe.

Theory of operation
-------------------
The reference server decodes request bodies into typed structs. That has visible consequences,
and clients (and our tests) depend on a few of them:

* Only the first JSON value of a body is read; anything after it is ignored. An empty body is
  the error ``EOF``.
* Object keys match struct fields exactly or, failing that, case-insensitively. Unknown keys are
  ignored and ``null`` leaves a field unchanged. When a key repeats, the last one wins.
* A value of the wrong type gives a message of the form
  ``json: cannot unmarshal string into Go struct field Proxy.enabled of type bool``.
  Integer fields refuse fractions and out-of-range numbers (``number 1.5``).
* Replies are compact, keys keep struct order, ``<``, ``>`` and ``&`` are escaped, and a float32
  prints in its shortest form (``1``, ``0.5``).

:func:`decode_body` parses a body, :func:`assign_fields` fills a dict from an object following
the rules above, :func:`encode` writes a reply.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "BodyError",
    "FieldSpec",
    "as_float32",
    "assign_fields",
    "decode_body",
    "encode",
    "find_key",
    "float32",
    "format_float32",
    "kind_of",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
FLOAT32_MAX: Final = 3.4028234663852886e38

# Go type names a field may have. "int" is a 64-bit int (slicer attributes are declared that way).
GO_TYPES: Final = frozenset({"string", "bool", "int64", "int", "float32"})

FieldSpec = Mapping[str, str]  # JSON field name -> Go type name, in struct order


class BodyError(Exception):
    """A request body that cannot be decoded. ``str(err)`` is the message without the
    ``bad request body:`` prefix the API adds."""


class _FloatLiteral(float):
    """A JSON number written with a fraction or exponent; keeps its text for error messages."""

    literal: str

    def __new__(cls, text: str) -> _FloatLiteral:
        value = super().__new__(cls, float(text))
        value.literal = text
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER: Final = json.JSONDecoder(parse_float=_FloatLiteral, parse_constant=_reject_constant)
_WHITESPACE: Final = b" \t\r\n"


def _quote_char(char: str) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return repr(char)


def decode_body(body: bytes) -> Any:
    """Decode the first JSON value of ``body``. Raises :class:`BodyError` with a message in the
    reference server's words for the common failures."""
    text_bytes = body.lstrip(_WHITESPACE)
    if not text_bytes:
        raise BodyError("EOF")
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("invalid character in string literal") from exc
    try:
        value, _end = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise BodyError(_describe_syntax_error(exc, text)) from exc
    except ValueError as exc:  # NaN, Infinity: not JSON
        raise BodyError(f"invalid character {_quote_char(str(exc)[0])} looking for beginning of value") from exc
    return value


def _describe_syntax_error(exc: json.JSONDecodeError, text: str) -> str:
    if exc.pos >= len(text):
        return "unexpected EOF"
    char = _quote_char(text[exc.pos])
    if exc.msg.startswith("Expecting ':'"):
        return f"invalid character {char} after object key"
    if exc.msg.startswith("Expecting ',' delimiter"):
        return f"invalid character {char} after object key:value pair"
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    if exc.msg.startswith("Invalid control"):
        return "invalid character in string literal"
    return f"invalid character {char} looking for beginning of value"


def kind_of(value: Any) -> str:
    """How the reference server names a JSON value in a type error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _number_text(value: int | float) -> str:
    if isinstance(value, _FloatLiteral):
        return value.literal
    return str(value)


def _convert(value: Any, go_type: str) -> Any:
    """Return ``value`` converted to ``go_type``, or raise ``_Mismatch`` with the value kind."""
    if go_type == "string":
        if isinstance(value, str):
            return value
        raise _Mismatch(kind_of(value))
    if go_type == "bool":
        if isinstance(value, bool):
            return value
        raise _Mismatch(kind_of(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Mismatch(kind_of(value))
    if go_type in ("int64", "int"):
        if isinstance(value, float) or not INT64_MIN <= value <= INT64_MAX:
            raise _Mismatch(f"number {_number_text(value)}")
        return int(value)
    # float32
    if math.isinf(value) or abs(float(value)) > FLOAT32_MAX:
        raise _Mismatch(f"number {_number_text(value)}")
    return float32(float(value))


class _Mismatch(Exception):
    pass


def assign_fields(
    obj: Any,
    fields: FieldSpec,
    target: dict[str, Any],
    *,
    struct_name: str,
    path: str = "",
    value_type: str,
) -> None:
    """Copy the fields of the JSON object ``obj`` named in ``fields`` into ``target``.

    ``struct_name`` and ``path`` name the destination in error messages; ``value_type`` is the
    type named when ``obj`` is not an object at all. Raises :class:`BodyError`.
    """
    if obj is None:
        return
    if not isinstance(obj, dict):
        where = f"Go struct field {struct_name}.{path}" if path else "Go value"
        raise BodyError(f"json: cannot unmarshal {kind_of(obj)} into {where} of type {value_type}")
    folded = {name.casefold(): name for name in fields}
    first_error: BodyError | None = None
    for key, value in obj.items():
        name = key if key in fields else folded.get(key.casefold())
        if name is None or value is None:
            continue
        try:
            target[name] = _convert(value, fields[name])
        except _Mismatch as mismatch:
            if first_error is None:
                field_path = f"{path}.{name}" if path else name
                first_error = BodyError(
                    f"json: cannot unmarshal {mismatch} into Go struct field "
                    f"{struct_name}.{field_path} of type {fields[name]}"
                )
    if first_error is not None:
        raise first_error


def find_key(obj: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` in ``obj`` (exact key, else the last case-insensitive match)."""
    if name in obj:
        return obj[name]
    found = None
    for key, value in obj.items():
        if key.casefold() == name.casefold():
            found = value
    return found


def float32(value: float) -> float:
    """Round ``value`` to the nearest IEEE single-precision value."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def format_float32(value: float) -> str:
    """The shortest text that reads back as the same float32, laid out like Go's encoder."""
    if value == 0:
        return "0"
    for digits in range(1, 10):
        text = f"{value:.{digits - 1}e}"
        if float32(float(text)) == value:
            break
    shortest = float(text)
    magnitude = abs(shortest)
    if 1e-6 <= magnitude < 1e21:
        formatted = repr(shortest)
        if "e" in formatted:  # repr uses exponents below 1e-4; Go does not until 1e-6
            formatted = f"{shortest:.{digits + 6}f}".rstrip("0").rstrip(".")
        if formatted.endswith(".0"):
            formatted = formatted[:-2]
        return formatted
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign = exponent[0]
    exponent_digits = exponent[1:].lstrip("0").rjust(2, "0")
    return f"{mantissa}e{sign}{exponent_digits}"


class _Float32(float):
    """Marks a float to be printed as a float32 by :func:`encode`."""


def as_float32(value: float) -> float:
    return _Float32(value)


def encode(value: Any) -> bytes:
    """Compact JSON, with HTML-sensitive characters escaped and float32 values printed short."""
    parts: list[str] = []
    _encode_into(value, parts)
    return "".join(parts).encode("utf-8")


_HTML_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _encode_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in _HTML_ESCAPES.items():
        encoded = encoded.replace(char, escape)
    return encoded


def _encode_into(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, _Float32):
        parts.append(format_float32(value))
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(json.dumps(value))
    elif isinstance(value, str):
        parts.append(_encode_string(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                parts.append(",")
            parts.append(_encode_string(key))
            parts.append(":")
            _encode_into(item, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode_into(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")
