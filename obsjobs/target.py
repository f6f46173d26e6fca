"""Find the engine that a command runs from a ``MODULE:ATTRIBUTE`` target.

The module is imported the way uvicorn imports an application: the current directory is
put on ``sys.path`` first, so ``obsjobs worker app.jobs:engine`` works from a project's
root without installing it. The attribute is an :class:`~obsjobs.Engine`, or a
zero-argument function, sync or async, that returns one. A function is called inside the
event loop, so it can open pools and clients that belong to that loop.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Final

from obsjobs.engine import Engine, EngineStatus
from obsjobs.jobs import RegisteredJob

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "Target", "TargetError", "parse_target", "resolve_engine"]

EXIT_FAILURE: Final = 1
"""Exit status when something failed while running: the user's code raised, a port is busy."""
EXIT_USAGE: Final = 2
"""Exit status for a wrong command line: a bad target, a missing module or attribute."""

_EXAMPLE = "'myapp.jobs:engine'"


class TargetError(Exception):
    """A target that gives no engine, with the exit status the command should end with.

    The message is one line that names the target and how to fix it. ``exit_code``
    is :data:`EXIT_USAGE` when the target itself is wrong, and :data:`EXIT_FAILURE`
    when the user's module or factory raised.
    """

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``MODULE:ATTRIBUTE``; the attribute may be dotted (``app:container.engine``)."""

    module: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}"

    def load(self) -> object:
        """Import the module and return the attribute, without calling it.

        Raises:
            TargetError: the module is not found, raises while importing, or has no
                such attribute.
        """
        module = _import(self.module)
        value: object = module
        for part in self.attribute.split("."):
            try:
                value = getattr(value, part)
            except AttributeError as error:
                message = _missing_attribute_message(self, module)
                raise TargetError(message, exit_code=EXIT_USAGE) from error
        return value


def parse_target(text: str) -> Target:
    """Parse ``MODULE:ATTRIBUTE``, where both parts are dotted Python identifiers.

    Raises:
        TargetError: ``text`` is not of that form (exit status 2).
    """
    module, separator, attribute = text.partition(":")
    if not separator:
        raise TargetError(
            f"invalid target {text!r}: expected MODULE:ATTRIBUTE, for example {_EXAMPLE}",
            exit_code=EXIT_USAGE,
        )
    for kind, value in (("module", module), ("attribute", attribute)):
        if not value or not all(part.isidentifier() for part in value.split(".")):
            raise TargetError(
                f"invalid target {text!r}: the {kind} part {value!r} is not a dotted "
                f"Python name; expected MODULE:ATTRIBUTE, for example {_EXAMPLE}",
                exit_code=EXIT_USAGE,
            )
    return Target(module, attribute)


async def resolve_engine(target: Target, value: object) -> Engine[Any]:
    """Return the engine ``value`` is, or the one its factory returns (awaited if async).

    Call this inside the event loop that will run the engine.

    Raises:
        TargetError: ``value`` is neither an engine nor a zero-argument factory, the
            factory raised, or it returned something else or an engine already started.
    """
    if isinstance(value, Engine):
        return _unstarted(target, value)
    if isinstance(value, RegisteredJob):
        raise TargetError(
            f"{target} is a registered job, not an engine; point the target at the "
            "Engine the job is registered on",
            exit_code=EXIT_USAGE,
        )
    if not callable(value):
        raise TargetError(
            f"{target} is a {type(value).__name__}; expected an obsjobs.Engine or a "
            "function without arguments that returns one",
            exit_code=EXIT_USAGE,
        )
    _check_no_required_parameters(target, value)

    try:
        result = value()
        if inspect.isawaitable(result):
            result = await result
    except Exception as error:
        raise TargetError(
            f"{target}() raised {_describe_error(error)}", exit_code=EXIT_FAILURE
        ) from error

    if not isinstance(result, Engine):
        raise TargetError(
            f"{target}() returned an object of type {type(result).__name__}; the factory "
            "must return an obsjobs.Engine",
            exit_code=EXIT_USAGE,
        )
    return _unstarted(target, result)


def _import(module_name: str) -> Any:
    # Like uvicorn: modules in the directory the command runs from are importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and _is_prefix(error.name, module_name):
            raise TargetError(
                f"module {module_name!r} not found in {cwd} or on sys.path; check the "
                "name, or run obsjobs from the directory that contains it",
                exit_code=EXIT_USAGE,
            ) from error
        raise TargetError(
            f"importing module {module_name!r} failed: {_describe_error(error)}",
            exit_code=EXIT_FAILURE,
        ) from error
    except Exception as error:
        raise TargetError(
            f"importing module {module_name!r} failed: {_describe_error(error)}",
            exit_code=EXIT_FAILURE,
        ) from error


def _is_prefix(missing: str, module_name: str) -> bool:
    """Return whether ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def _missing_attribute_message(target: Target, module: Any) -> str:
    engines = sorted(name for name, value in vars(module).items() if isinstance(value, Engine))
    hint = f"engines defined there: {', '.join(engines)}" if engines else "no engine is defined"
    return (
        f"module {target.module!r} has no attribute {target.attribute!r} ({hint}); "
        "check the part after the colon"
    )


def _check_no_required_parameters(target: Target, factory: Any) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        # Some builtins and C callables have no signature; calling them will tell.
        return
    required = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise TargetError(
            f"{target} requires arguments ({', '.join(required)}); point the target at an "
            "Engine or at a function without arguments that returns one",
            exit_code=EXIT_USAGE,
        )


def _unstarted(target: Target, engine: Engine[Any]) -> Engine[Any]:
    if engine.status is not EngineStatus.CREATED:
        raise TargetError(
            f"{target} gave an engine that is already {engine.status.value}; return a new, "
            "unstarted engine and let the command start it",
            exit_code=EXIT_USAGE,
        )
    return engine


def _describe_error(error: BaseException) -> str:
    """Return ``Class: message (at file:line)`` on one line, with the innermost frame."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if isinstance(error, SyntaxError):
        # The message already names the file and line of the bad source.
        return text
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return text
    last = frames[-1]
    return f"{text} (at {last.filename}:{last.lineno})"
