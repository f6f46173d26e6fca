"""Checks that job arguments come back from the queue exactly as given.

Arguments travel as JSON, so only values that JSON returns unchanged (same type, same
value) are accepted: ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` and
``dict`` with ``str`` keys, nested. Anything else is rejected at enqueue with an error that
names the argument, and nothing is stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

from obsjobs.errors import JobArgumentsError
from obsjobs.protocols import JSONValue

__all__ = ["check_arguments"]

_SCALARS = (str, int, bool, type(None))


def check_arguments(
    job: str, args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple[list[JSONValue], dict[str, JSONValue]]:
    """Return copies of ``args`` and ``kwargs`` that are safe to store as JSON.

    The copies are deep, so a caller that mutates its list after enqueueing does not
    change the job.

    Raises:
        JobArgumentsError: naming the first value that JSON would change, such as
            ``kwargs['when']`` for a ``datetime`` or ``args[0][1]`` for a tuple.
    """
    if not args and not kwargs:
        return [], {}
    checked_args = [_copy_value(job, value, f"args[{index}]") for index, value in enumerate(args)]
    checked_kwargs = {
        key: _copy_value(job, value, f"kwargs[{key!r}]") for key, value in kwargs.items()
    }
    return checked_args, checked_kwargs


def _copy_value(job: str, value: object, path: str) -> JSONValue:
    # Exact type checks on purpose: a str or int subclass (an enum, say) comes back from
    # JSON as the plain base type, which is not "exactly as given".
    kind = type(value)
    if kind in _SCALARS:
        return cast(JSONValue, value)
    if kind is float:
        number = cast(float, value)
        if not math.isfinite(number):
            raise _rejected(job, path, f"{number!r} is not valid JSON")
        return number
    if kind is list:
        items = cast(list[object], value)
        return [_copy_value(job, item, f"{path}[{index}]") for index, item in enumerate(items)]
    if kind is dict:
        return _copy_dict(job, cast(dict[object, object], value), path)
    return _rejected_type(job, value, path)


def _copy_dict(job: str, mapping: dict[object, object], path: str) -> dict[str, JSONValue]:
    copied: dict[str, JSONValue] = {}
    for key, item in mapping.items():
        if type(key) is not str:
            raise _rejected(
                job, path, f"key {key!r} is a {type(key).__name__}; JSON object keys are strings"
            )
        copied[key] = _copy_value(job, item, f"{path}[{key!r}]")
    return copied


def _rejected_type(job: str, value: object, path: str) -> JSONValue:
    kind = type(value).__name__
    hint = {
        "tuple": "pass a list",
        "set": "pass a sorted list",
        "frozenset": "pass a sorted list",
        "datetime": "pass an ISO 8601 string",
        "date": "pass an ISO 8601 string",
        "Decimal": "pass a string",
        "UUID": "pass str(uuid)",
        "bytes": "pass a base64 string",
    }.get(kind, "pass JSON types only: None, bool, int, float, str, list, dict with str keys")
    raise _rejected(job, path, f"a {kind} would not come back from JSON as a {kind}; {hint}")


def _rejected(job: str, path: str, reason: str) -> JobArgumentsError:
    return JobArgumentsError(
        f"job {job!r}: argument {path} cannot be enqueued: {reason}", job=job, argument=path
    )
