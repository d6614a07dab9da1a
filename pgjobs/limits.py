"""Input limits: what enqueue accepts, checked in pure Python before any I/O.

The SQL function `enqueue` (migration 0005, section "input limits") enforces the same
limits for SQL callers, and the README lists them. Every check raises `InvalidInput` (a
ValueError and a TypeError too) with one line naming the field and the limit.
"""

from __future__ import annotations

import re
from typing import Any

from pgjobs.errors import InvalidInput

MAX_NAME_LENGTH = 200  # characters of a task, queue or schedule name
MAX_DEDUP_KEY_BYTES = 512  # UTF-8 bytes: well inside a btree entry, as the unique index needs
MAX_JSON_DEPTH = 100  # arrays/objects nested inside one argument
MAX_INT_DIGITS = 4300  # Python's default int/str limit, which the worker's decoder hits
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # Postgres integer (priority, max_attempts)

# Characters a name must not hold: C0 and C1 controls (NUL, newline, ESC...), DEL, the
# bidirectional controls and line/paragraph separators (they reorder or break log lines and
# terminals), and lone surrogates (not UTF-8). The SQL function checks the same set.
_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_BIG_INT = 10**MAX_INT_DIGITS  # the smallest integer of MAX_INT_DIGITS + 1 digits
_BIG_INT_BITS = _BIG_INT.bit_length()  # smaller ints cannot reach it


def check_name(kind: str, name: object) -> str:
    """`name` if it is a valid task/queue/schedule name, else InvalidInput."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{kind} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"{kind} name is longer than {MAX_NAME_LENGTH} characters: {name[:40]!r}..."
        )
    # isprintable() is false for every forbidden character, and cheap: the common case.
    if not name.isprintable() and (found := _FORBIDDEN.search(name)):
        what = "NUL characters" if found.group() == "\x00" else "control characters"
        if "\ud800" <= found.group() <= "\udfff":
            what = "lone surrogates (not valid UTF-8)"
        raise InvalidInput(f"{kind} name must not contain {what}: {name!r}")
    return name


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_priority(value: object) -> None:
    if not is_int(value):
        raise InvalidInput(f"priority must be an int, got {value!r}")
    if not INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
        raise InvalidInput(f"priority must be an int from {INT_MIN} to {INT_MAX}, got {value!r}")


def check_max_attempts(value: object) -> None:
    if not is_int(value) or not 1 <= value <= INT_MAX:  # type: ignore[operator]
        raise InvalidInput(f"max_attempts must be an int >= 1 and <= {INT_MAX}, got {value!r}")


def check_dedup_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"dedup_key must be a non-empty string, got {key!r}")
    size = len(key)
    if not key.isascii():
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise InvalidInput(
                "dedup_key must not contain lone surrogates (not valid UTF-8)"
            ) from None
    if size > MAX_DEDUP_KEY_BYTES:
        raise InvalidInput(
            f"dedup_key is {size:,} bytes of UTF-8, over the limit of {MAX_DEDUP_KEY_BYTES}"
        )
    if "\x00" in key:
        raise InvalidInput("dedup_key must not contain NUL characters")


def may_break_limits(text: str) -> bool:
    """Cheap test on an argument's JSON: False means it is within the depth and integer
    limits for sure (too few brackets to nest that deep, too short for such a number)."""
    return len(text) > MAX_INT_DIGITS or text.count("[") + text.count("{") > MAX_JSON_DEPTH


def structure_problem(value: Any) -> str | None:
    """Why a JSON-able value breaks the depth or integer limit, or None (no recursion, so
    any depth is safe; call it on acyclic values, e.g. after they have been encoded)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | tuple | dict):
            if depth == MAX_JSON_DEPTH:
                return f"nests deeper than {MAX_JSON_DEPTH} levels of arrays/objects (the limit)"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and item.bit_length() >= _BIG_INT_BITS and abs(item) >= _BIG_INT:
            return f"holds an integer of more than {MAX_INT_DIGITS:,} digits (the limit)"
    return None
