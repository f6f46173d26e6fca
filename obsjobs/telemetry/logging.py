"""structlog set-up: trace ids on every event, and an opt-in JSON or console configuration.

The library itself only calls ``structlog.get_logger()``, so an application that already
configures structlog keeps its own set-up and can add :func:`add_trace_ids` to it.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO, cast

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["add_trace_ids", "configure_logging"]

_FORMATS = ("json", "console")
# Names that structlog's filtering loggers accept, with the stdlib level numbers they map to.
_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}


def add_trace_ids(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` of the current OpenTelemetry span to the event.

    The ids are W3C lowercase hex: 32 characters for the trace, 16 for the span. Nothing
    is added outside a span with a valid context, and keys the event already has are kept.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return event_dict
    if "trace_id" not in event_dict:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
    if "span_id" not in event_dict:
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _level_number(level: str | int) -> int:
    # bool is an int subclass, but True as a log level is a mistake, not level 1.
    if isinstance(level, bool) or not isinstance(level, str | int):
        raise TypeError(f"level must be a level name or number, got {level!r}")
    if isinstance(level, str):
        number = _LEVELS.get(level.strip().lower())
        if number is None:
            names = ", ".join(_LEVELS)
            raise ValueError(f"level must be one of {names}, got {level!r}")
        return number
    if level not in _LEVELS.values():
        numbers = ", ".join(str(number) for number in sorted(set(_LEVELS.values())))
        raise ValueError(f"level must be one of the stdlib levels {numbers}, got {level!r}")
    return level


def configure_logging(
    format: Literal["json", "console"] = "console",
    level: str | int = "info",
) -> None:
    """Configure structlog for JSON lines in production or a readable console.

    Every event gets the context variables bound with ``structlog.contextvars`` (the
    engine binds ``job_id``, ``job``, ``queue`` and ``attempt`` around each perform), its
    level, ``trace_id`` and ``span_id`` inside a span, and an ISO 8601 UTC ``timestamp``.
    Exceptions are rendered as structured tracebacks in JSON and as text on the console.
    Events below ``level`` are dropped at the call, cheaply. Output goes to standard
    output; console colours are used only when it is a terminal.

    This replaces any earlier structlog configuration of the process, and is opt-in:
    the library never calls it.

    Args:
        format: ``"json"`` for one JSON object per line, ``"console"`` for a terminal.
        level: the minimum level, as a name (``"debug"``, ``"info"``, ``"warning"``,
            ``"error"``, ``"critical"``, any case) or a stdlib number (``logging.INFO``).

    Raises:
        ValueError: ``format`` or ``level`` is not one of the accepted values.
        TypeError: ``level`` is neither a string nor an integer.
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be 'json' or 'console', got {format!r}")
    min_level = _level_number(level)

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks are rendered without local variables, because a job's frame contains
    # its arguments and job arguments are not logged.
    if format == "json":
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors += [
            structlog.processors.ExceptionRenderer(transformer),
            structlog.processors.JSONRenderer(),
        ]
    else:
        # ConsoleRenderer formats exc_info itself, so no exception processor goes before it.
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=sys.stdout.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _TolerantStream(sys.stdout))),
        cache_logger_on_first_use=False,
    )


class _TolerantStream:
    """Standard output that stops writing, instead of raising, once its reader is gone.

    A log shipper that dies, or ``| head``, closes the pipe. Raising BrokenPipeError
    from a log call would break whatever was logging (a signal handler, a job's
    result), so the worker keeps running and its logs are dropped from then on.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._broken = False

    def write(self, text: str) -> int:
        if self._broken:
            return 0
        try:
            return self._stream.write(text)
        except (BrokenPipeError, ValueError):
            # ValueError: the stream was closed.
            self._broken = True
            return 0

    def flush(self) -> None:
        if self._broken:
            return
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            self._broken = True
