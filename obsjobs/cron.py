"""Fire times for cron expressions, with a stated daylight-saving policy."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from obsjobs.errors import InvalidScheduleError
from obsjobs.triggers import as_utc, require_aware

__all__ = ["CronTrigger"]

MAX_CLOCK_CHANGE: Final = timedelta(hours=3)
"""The largest change of a zone's UTC offset that :class:`CronTrigger` handles exactly.

In tzdata 2026.6, from 1970 to 2100, the only larger changes are Antarctica/Vostok in 1994
and the date-line moves of Pacific/Kwajalein (1993), Pacific/Kanton and Pacific/Kiritimati
(1994), Pacific/Apia and Pacific/Fakaofo (2011). Within such a change, a fixed-time fire
whose wall time fell in the gap can be missed when ``after`` lies more than this past it.
"""

CRON_SEARCH_YEARS: Final = 400
"""How many years of calendar croniter searches for the next matching date.

The Gregorian calendar, weekdays included, repeats every 400 years (146,097 days, exactly
20,871 weeks), so an expression with no match in 400 consecutive years never fires. The rarest
expressions that do fire, such as the fifth Monday of February (``0 0 * 2 1#5``), go up to 40
years without a fire (2072 to 2112), which croniter's default bound of 50 years would also
cover. This bound is a proof rather than an estimate.
"""

_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# croniter splits fields on ASCII whitespace only, so the two must split alike.
_FIELD_PATTERN: Final = re.compile(r"\S+", re.ASCII)

# Any year works as the start of the never-fires search, because the calendar is periodic.
_PROBE_START: Final = datetime(2000, 1, 1)

# Offsets are probed only inside this range so that shifting by a zone's offset or by
# MAX_CLOCK_CHANGE never leaves the datetime range.
_SAFE_MIN: Final = datetime(1, 1, 2, tzinfo=UTC)
_SAFE_MAX: Final = datetime(9999, 12, 30, tzinfo=UTC)

_ONE_MICROSECOND: Final = timedelta(microseconds=1)

# Each round of CronTrigger's search moves forward, and two rounds are enough unless a
# zone changes its offset twice within six hours.
_MAX_SEARCH_ROUNDS: Final = 4


def _load_zone(zone: str | ZoneInfo, schedule: str) -> ZoneInfo:
    """Resolve ``zone`` to a ZoneInfo, raising InvalidScheduleError for unknown names."""
    if isinstance(zone, ZoneInfo):
        return zone
    if not isinstance(zone, str):
        raise TypeError(f"timezone must be an IANA zone name or a ZoneInfo, got {zone!r}")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(
            f"unknown time zone {zone!r} for schedule {schedule!r}. "
            "Use an IANA name such as 'Europe/Paris' or 'UTC'",
            schedule=schedule,
        ) from exc


def _split_fields(expression: str, schedule: str) -> list[str]:
    """Resolve an alias and split ``expression`` into 5 or 6 fields, or raise."""
    text = expression.strip()
    if text.startswith("@"):
        alias = _ALIASES.get(text.lower())
        if alias is None:
            raise InvalidScheduleError(
                f"invalid cron expression {expression!r}: unknown alias {text!r}. "
                f"Supported aliases are {', '.join(_ALIASES)}",
                schedule=schedule,
            )
        text = alias
    fields = _FIELD_PATTERN.findall(text)
    if len(fields) not in (5, 6):
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour "
            "day-of-month month day-of-week) or 6 with seconds first, "
            f"got {len(fields)}",
            schedule=schedule,
        )
    # croniter's H (hashed) fields need a hash id and R (random) fields differ per
    # process, so schedulers in two processes would not agree on the ticks.
    for field in fields:
        if field[:1].lower() in ("h", "r"):
            raise InvalidScheduleError(
                f"invalid cron expression {expression!r}: field {field!r} uses hashed (H) "
                "or random (R) values, which are not supported. Write the values out",
                schedule=schedule,
            )
    return fields


def _day_streams(fields: list[str], day_restricted: bool) -> list[str]:
    """Return the croniter expressions whose union is the schedule of ``fields``.

    When both day-of-month and day-of-week are restricted (``day_restricted``), cron fires
    on days that match either. croniter 7.0.0 gets that union wrong when day-of-week uses
    ``#`` or ``L``: it drops day-of-month for ``0 0 1 * 1#1`` and intersects for
    ``0 0 15 * L5``. So the two sides become two expressions, each with the other day
    field set to ``*``.
    """
    if not day_restricted:
        return [" ".join(fields)]
    day_of_month = len(fields) - 3
    day_of_week = len(fields) - 1
    month_side = [*fields]
    month_side[day_of_week] = "*"
    week_side = [*fields]
    week_side[day_of_month] = "*"
    return [" ".join(month_side), " ".join(week_side)]


def _utc_offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    """Return the UTC offset of ``zone`` at ``instant``, clamped to the datetime range."""
    clamped = min(max(instant, _SAFE_MIN), _SAFE_MAX)
    offset = clamped.astimezone(zone).utcoffset()
    return offset if offset is not None else timedelta(0)


@dataclass(frozen=True, slots=True)
class _ClockChange:
    """A zone's UTC offset around one instant: ``before`` until ``at``, then ``after``.

    With ``before == after`` it describes a stretch of time with no change.
    """

    at: datetime
    before: timedelta
    after: timedelta

    def offset_at(self, instant: datetime) -> timedelta:
        """Return the offset this model gives at ``instant``."""
        return self.before if instant < self.at else self.after


def _find_clock_change(zone: ZoneInfo, start: datetime, end: datetime) -> _ClockChange:
    """Return the offset change of ``zone`` between the UTC instants ``start`` and ``end``.

    Assumes at most one change in the span, which is true for spans up to two days in
    tzdata since 1970. Zones change offsets at whole seconds, so bisecting whole seconds
    finds the exact instant.
    """
    start = start.replace(microsecond=0)
    before = _utc_offset(zone, start)
    after = _utc_offset(zone, end)
    if before == after:
        return _ClockChange(start, before, before)
    low, high = 0, math.ceil((end - start).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if _utc_offset(zone, start + timedelta(seconds=middle)) == before:
            low = middle
        else:
            high = middle
    return _ClockChange(start + timedelta(seconds=high), before, after)


@final
class CronTrigger:
    """Fire times of a cron expression, evaluated in an IANA time zone.

    Syntax: five fields (minute hour day-of-month month day-of-week), or six with the
    seconds field first, or one of the aliases ``@yearly @annually @monthly @weekly
    @daily @midnight @hourly``. Fields are parsed by croniter 7.0.0, which also accepts
    names (``jan``, ``mon``), ``?``, ``L`` (last day of the month), ``15W`` (nearest weekday
    to the 15th), ``2#3`` (third Tuesday) and ``L5`` (last Friday). Day-of-week 0 and 7 are
    both Sunday. Hashed (``H``) and random (``R``) fields are rejected.

    Days: when day-of-month and day-of-week are both restricted, a day fires when EITHER
    matches, with ``L``, ``W``, ``#`` and ``L5`` too. A field is restricted when croniter
    expands it to fewer than all its values: ``*`` and ``?`` are not, and unlike in Vixie
    cron ``*/2`` is. croniter also reads an equal range such as ``6-6`` as the whole
    cycle, and a day field listing every value as unrestricted when the other day field
    contains ``*``.

    Daylight saving: croniter finds matching naive local wall-clock times, and each is
    mapped to UTC with the zone's offsets from zoneinfo, as zoneinfo's ``fold`` attribute
    maps them. The mapping depends on the hour field:

    * Fixed-time expressions (the hour field does not cover all 24 hours, such as
      ``30 2 * * *``): a local time inside a spring-forward gap fires once, shifted later
      by the length of the gap (zoneinfo's ``fold=0`` mapping). So 02:30 on a day when
      clocks go from 02:00 to 03:00 fires at 03:30. A local time that occurs twice at a
      fall-back fires once, at its first occurrence (also ``fold=0``). If a shifted time
      lands on another fire time (02:30 and 03:30 both firing at 03:30), it fires once.
    * Wildcard-hour expressions (the hour field is ``*`` or covers all 24 hours, such as
      ``*/15 * * * *``, ``0 * * * *``, or seconds expressions like ``*/10 * * * * *``):
      fires follow elapsed time. Local times inside a gap do not exist and do not fire.
      Local times that occur twice fire twice, once in each occurrence, in UTC order.

    Results always strictly increase: ``next_after`` never returns ``after`` itself.

    Raises:
        InvalidScheduleError: the expression is invalid or can never fire (no date in a
            400-year Gregorian cycle matches, as for ``0 0 30 2 *``), or the zone is
            unknown. ``schedule`` is ``name``, or the expression when no name is given.
        TypeError: ``expression`` is not a string, or ``timezone`` not a string or ZoneInfo.
    """

    expression: str
    """The expression with surrounding whitespace removed."""
    timezone: ZoneInfo
    """The zone whose wall clock the expression is read in."""
    description: str
    """A summary such as ``cron '*/5 * * * *' in Europe/Paris``."""

    def __init__(
        self, expression: str, *, timezone: str | ZoneInfo = "UTC", name: str | None = None
    ) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"expression must be a string, got {type(expression).__name__}")
        schedule = name or expression
        fields = _split_fields(expression, schedule)
        self._seconds_first = len(fields) == 6
        try:
            expanded, _ = croniter.expand(" ".join(fields), second_at_beginning=self._seconds_first)
        except CroniterError as exc:
            raise InvalidScheduleError(
                f"invalid cron expression {expression!r}: {exc}", schedule=schedule
            ) from exc
        # croniter orders the expanded fields minute, hour, day-of-month, month,
        # day-of-week, second, and writes a field that allows every value as ["*"].
        self._wildcard_hour = expanded[1] == ["*"]
        day_restricted = expanded[2] != ["*"] and expanded[4] != ["*"]
        streams = _day_streams(fields, day_restricted)
        self._streams = [stream for stream in streams if self._can_fire(stream)]
        if not self._streams:
            raise InvalidScheduleError(
                f"cron expression {expression!r} can never fire: no date in a full "
                f"{CRON_SEARCH_YEARS}-year Gregorian calendar cycle matches its "
                "day-of-month, month and day-of-week fields",
                schedule=schedule,
            )
        self.expression = expression.strip()
        self.timezone = _load_zone(timezone, schedule)
        self.description = f"cron {self.expression!r} in {self.timezone}"

    def __repr__(self) -> str:
        return f"CronTrigger({self.expression!r}, timezone={str(self.timezone)!r})"

    def next_after(self, after: datetime) -> datetime:
        """Return the first fire time strictly later than ``after``, in UTC.

        Raises:
            TypeError: ``after`` is not a datetime.
            ValueError: ``after`` is naive, or earlier than 0001-01-02 UTC.
            OverflowError: no fire time exists before the end of year 9999.
        """
        instant = require_aware(after, "after").astimezone(UTC)
        if instant < _SAFE_MIN:
            raise ValueError(f"after must be {_SAFE_MIN.isoformat()} or later, got {after!r}")
        candidates = [self._next_in_stream(stream, instant) for stream in self._streams]
        found = [c for c in candidates if c is not None]
        if not found:
            raise OverflowError(
                f"cron expression {self.expression!r} has no fire time after "
                f"{after.isoformat()} before datetime.max"
            )
        return min(found)

    def _iterate(self, stream: str, start: datetime) -> croniter[datetime]:
        """Return a croniter over naive wall-clock times of ``stream`` after ``start``."""
        return croniter(
            stream,
            start,
            ret_type=datetime,
            day_or=True,
            max_years_between_matches=CRON_SEARCH_YEARS,
            second_at_beginning=self._seconds_first,
        )

    def _can_fire(self, stream: str) -> bool:
        """Return whether any date in CRON_SEARCH_YEARS of calendar matches ``stream``."""
        try:
            self._iterate(stream, _PROBE_START).get_next(datetime)
        except CroniterBadDateError:
            return False
        return True

    def _first_wall(self, stream: str, after: datetime) -> datetime | None:
        """Return the first naive wall-clock match of ``stream`` later than ``after``.

        Returns None when there is none before year 10000.
        """
        # Matches fall on whole seconds, so flooring `after` changes nothing, and it
        # keeps croniter's float timestamps exact.
        try:
            return self._iterate(stream, after.replace(microsecond=0)).get_next(datetime)
        except (ValueError, OverflowError):
            # For a validated stream croniter raises these only past year 9999
            # (CroniterBadDateError is a ValueError): every stream that passed _can_fire
            # matches some date in each 400-year cycle.
            return None

    def _next_in_stream(self, stream: str, instant: datetime) -> datetime | None:
        """Return the first fire of ``stream`` after the UTC ``instant``, or None past 9999.

        Wall-clock order and UTC order differ only within MAX_CLOCK_CHANGE of a clock
        change. So a model of the offsets around ``instant`` (one change at most) gives a
        candidate, which is correct if the zone's real offsets agree with the model just
        before it. If they do not, a change lies between, no fire can come earlier than
        MAX_CLOCK_CHANGE before the candidate's wall time read with the real offset, and
        the search restarts from there.
        """
        lower = instant
        fire: datetime | None = None
        for _ in range(_MAX_SEARCH_ROUNDS):
            try:
                change = _find_clock_change(
                    self.timezone, lower - MAX_CLOCK_CHANGE, lower + MAX_CLOCK_CHANGE
                )
                fire = self._first_fire(stream, lower, change)
            except OverflowError:
                # The instants involved lie past the end of year 9999.
                return None
            if fire is None or self._model_holds(change, fire):
                return fire
            # The wall time of `fire` may really fire earlier, where the zone's offset is
            # larger than the model's, so the search restarts before both.
            error = change.offset_at(fire) - _utc_offset(self.timezone, fire)
            lower = max(lower, fire + min(error, timedelta(0)) - MAX_CLOCK_CHANGE)
        # NOTE: reached only if a zone changes its offset twice within six hours, which
        # tzdata does not do after 1970. The last candidate is still later than `instant`.
        return fire

    def _model_holds(self, change: _ClockChange, fire: datetime) -> bool:
        """Return whether the zone's real offsets match ``change`` just before ``fire``."""
        earlier = fire - MAX_CLOCK_CHANGE
        if _utc_offset(self.timezone, earlier) != change.offset_at(earlier):
            return False
        return _utc_offset(self.timezone, fire) == change.offset_at(fire)

    def _first_fire(self, stream: str, lower: datetime, change: _ClockChange) -> datetime | None:
        """Return the first fire after ``lower`` if the zone's offsets follow ``change``."""
        wall_lower = lower.replace(tzinfo=None)
        wall_change = change.at.replace(tzinfo=None)
        before, after = change.before, change.after
        if lower < change.at:
            wall = self._first_wall(stream, wall_lower + before)
            if wall is None:
                return None
            if wall < wall_change + before:
                return as_utc(wall - before)
        # After a fall-back, the repeated wall times fire again only in wildcard-hour mode.
        repeat_offset = after if self._wildcard_hour else max(before, after)
        wall = self._first_wall(
            stream, max(wall_lower + after, wall_change + repeat_offset - _ONE_MICROSECOND)
        )
        fires = [] if wall is None else [wall - after]
        if not self._wildcard_hour and after > before:
            # Fixed-time mode fires gap times too, each shifted by the gap (zoneinfo fold=0).
            wall = self._first_wall(
                stream, max(wall_lower + before, wall_change + before - _ONE_MICROSECOND)
            )
            if wall is not None and wall < wall_change + after:
                fires.append(wall - before)
        return as_utc(min(fires)) if fires else None
