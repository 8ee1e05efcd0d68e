"""A small reader for the subset of EDN that Jepsen and Knossos histories use.

Theory of operation
-------------------
EDN is Clojure's data notation. Histories written by Jepsen are sequences of maps such as
``{:process 3, :type :ok, :f :cas, :value [1 2]}``; nothing more exotic than maps, vectors, lists,
sets, keywords, strings, numbers, ``nil``/``true``/``false`` and the odd ``#inst``/``#uuid``
tagged literal appears in them. This module reads exactly that subset.

Values are mapped to Python so that they are *hashable* wherever EDN values are (the checker
puts them in model states, which must be hashable):

===================  ===========================
EDN                  Python
===================  ===========================
``nil``              ``None``
``true``/``false``   ``True``/``False``
integer, ``42N``     ``int``
float, ``1.5M``      ``float``
string               ``str``
keyword ``:read``    :class:`Keyword` (a ``str`` subclass equal to ``"read"``)
symbol ``foo``       :class:`Symbol` (a ``str`` subclass)
vector, list         ``tuple``
set                  ``frozenset``
map                  ``dict`` (read-only by convention)
``#tag value``       the value (the tag is dropped)
``#_ form``          nothing (the form is discarded)
===================  ===========================

Commas are whitespace and ``;`` starts a comment, as in EDN. Malformed input raises
:class:`EdnError` with the offset of the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["EdnError", "Keyword", "Symbol", "loads", "loads_all", "iter_forms"]


class EdnError(ValueError):
    """The text is not EDN of the subset this reader understands."""


class Keyword(str):
    """An EDN keyword. It compares equal to its name without the colon: ``Keyword("ok") == "ok"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return ":" + str.__str__(self)


class Symbol(str):
    """An EDN symbol other than ``nil``, ``true`` and ``false``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Symbol(" + str.__repr__(self) + ")"


_TOKEN = re.compile(
    r"""
    (?P<skip>(?:[\s,]+|;[^\n]*)+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<open>\#\{|[\[({])
  | (?P<close>[\])}])
  | (?P<discard>\#_)
  | (?P<tag>\#[^\s,\[\](){}"\#;]+)
  | (?P<char>\\(?:newline|space|tab|return|formfeed|backspace|u[0-9a-fA-F]{4}|.))
  | (?P<atom>[^\s,\[\](){}";\\]+)
    """,
    re.VERBOSE | re.DOTALL,
)

_INT = re.compile(r"[+-]?\d+N?")
_FLOAT = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?M?")
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "b": "\b", "f": "\f"}
_CHAR_NAMES = {"newline": "\n", "space": " ", "tab": "\t", "return": "\r", "formfeed": "\f", "backspace": "\b"}
_CLOSER = {"[": "]", "(": ")", "{": "}", "#{": "}"}


def _string(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            out.append(_STRING_ESCAPES.get(e, e))
            i += 2
    return "".join(out)


def _atom(token: str, offset: int) -> Any:
    if token == "nil":
        return None
    if token == "true":
        return True
    if token == "false":
        return False
    first = token[0]
    if first == ":":
        if len(token) == 1:
            raise EdnError(f"empty keyword at offset {offset}")
        return Keyword(token[1:])
    if first.isdigit() or (first in "+-" and len(token) > 1 and token[1].isdigit()):
        if _INT.fullmatch(token):
            return int(token.rstrip("N"))
        if _FLOAT.fullmatch(token):
            return float(token.rstrip("M"))
        raise EdnError(f"bad number {token!r} at offset {offset}")
    return Symbol(token)


def _build(kind: str, items: list[Any], offset: int) -> Any:
    if kind == "{":
        if len(items) % 2:
            raise EdnError(f"map with an odd number of forms at offset {offset}")
        return {items[i]: items[i + 1] for i in range(0, len(items), 2)}
    if kind == "#{":
        return frozenset(items)
    return tuple(items)


def iter_forms(text: str) -> Iterator[Any]:
    """Yield each top-level form of ``text`` in order."""
    # Each frame of the stack is (opening token, items so far, offset of the opening token).
    stack: list[tuple[str, list[Any], int]] = []
    # Pending prefixes (tags and discards) apply to the next complete form, innermost first.
    pending: list[tuple[str, int]] = []
    pos = 0
    end = len(text)
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise EdnError(f"unexpected character {text[pos]!r} at offset {pos}")
        kind = m.lastgroup
        token = m.group()
        start = pos
        pos = m.end()
        if kind == "skip":
            continue
        if kind == "open":
            stack.append((token, [], start))
            pending.append(("(", start))  # marks the frame boundary for pending prefixes
            continue
        if kind == "discard" or kind == "tag":
            pending.append((kind, start))
            continue
        if kind == "close":
            if not stack:
                raise EdnError(f"unbalanced {token!r} at offset {start}")
            opener, items, at = stack.pop()
            if _CLOSER[opener] != token:
                raise EdnError(f"{opener!r} at offset {at} closed by {token!r} at offset {start}")
            marker = pending.pop()
            if marker[0] != "(":
                raise EdnError(f"tag or discard without a form before offset {start}")
            value: Any = _build(opener, items, at)
        elif kind == "str":
            value = _string(token)
        elif kind == "char":
            name = token[1:]
            if len(name) == 5 and name[0] == "u":
                value = chr(int(name[1:], 16))
            else:
                value = _CHAR_NAMES.get(name, name)
        else:
            value = _atom(token, start)
        # Apply the prefixes waiting for this form.
        discarded = False
        while pending and pending[-1][0] != "(":
            prefix, _ = pending.pop()
            if prefix == "discard":
                discarded = True
                break
        if discarded:
            continue
        if stack:
            stack[-1][1].append(value)
        else:
            yield value
    if stack:
        raise EdnError(f"unclosed {stack[-1][0]!r} at offset {stack[-1][2]}")
    if pending:
        raise EdnError("tag or discard at the end of the input")


def loads_all(text: str) -> list[Any]:
    """Every top-level form of ``text``."""
    return list(iter_forms(text))


def loads(text: str) -> Any:
    """The single form of ``text``; raises :class:`EdnError` if there are none or several."""
    forms = loads_all(text)
    if len(forms) != 1:
        raise EdnError(f"expected one form, found {len(forms)}")
    return forms[0]
