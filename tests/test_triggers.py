"""Tests for obsjobs.triggers and obsjobs.cron: interval and cron fire times.

Expected instants were worked out by hand from the calendar and each zone's published
daylight-saving rules, then checked against zoneinfo with a separate script that maps the
local wall-clock times directly (no croniter, no obsjobs code).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from obsjobs.cron import CronTrigger
from obsjobs.errors import InvalidScheduleError
from obsjobs.triggers import IntervalTrigger, Trigger

NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"
SYDNEY = "Australia/Sydney"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def collect_fires(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    """Return the next ``count`` fire times after ``after``, each from the previous one."""
    result: list[datetime] = []
    for _ in range(count):
        after = trigger.next_after(after)
        result.append(after)
    return result


# --- cron syntax -------------------------------------------------------------------------


def test_cron_every_five_minutes() -> None:
    """A five-field expression fires on its minutes, in UTC by default."""
    trigger = CronTrigger("*/5 * * * *")
    assert collect_fires(trigger, utc(2026, 1, 1, 10, 3), 3) == [
        utc(2026, 1, 1, 10, 5),
        utc(2026, 1, 1, 10, 10),
        utc(2026, 1, 1, 10, 15),
    ]


def test_cron_seconds_field_comes_first() -> None:
    """With six fields the first one is seconds, not minutes."""
    trigger = CronTrigger("5 * * * * *")
    assert collect_fires(trigger, utc(2026, 1, 1, 10, 0, 6), 2) == [
        utc(2026, 1, 1, 10, 1, 5),
        utc(2026, 1, 1, 10, 2, 5),
    ]


def test_cron_seconds_with_fixed_time() -> None:
    """``30 0 9 * * *`` fires at 09:00:30 each day."""
    trigger = CronTrigger("30 0 9 * * *")
    assert trigger.next_after(utc(2026, 1, 1, 9, 0, 30)) == utc(2026, 1, 2, 9, 0, 30)


def test_cron_sub_minute_step() -> None:
    """``*/20`` in the seconds field fires three times a minute."""
    trigger = CronTrigger("*/20 * * * * *")
    assert collect_fires(trigger, utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


# 2026-01-01 is a Thursday, so the first Sunday is 2026-01-04.
@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", utc(2027, 1, 1)),
        ("@annually", utc(2027, 1, 1)),
        ("@monthly", utc(2026, 2, 1)),
        ("@weekly", utc(2026, 1, 4)),
        ("@daily", utc(2026, 1, 2)),
        ("@midnight", utc(2026, 1, 2)),
        ("@hourly", utc(2026, 1, 1, 1)),
        ("@DAILY", utc(2026, 1, 2)),
    ],
)
def test_cron_alias_first_fire(alias: str, expected: datetime) -> None:
    """Each alias fires like the five-field expression it stands for."""
    assert CronTrigger(alias).next_after(utc(2026, 1, 1, 0, 0, 30)) == expected


@pytest.mark.parametrize("expression", ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun"])
def test_cron_sunday_spellings(expression: str) -> None:
    """Day-of-week 0, 7 and ``sun`` are all Sunday (2026-01-04 is the first of 2026)."""
    assert CronTrigger(expression).next_after(utc(2026, 1, 1)) == utc(2026, 1, 4)


def test_cron_result_strictly_later() -> None:
    """Passing a fire time returns the next one, never the same instant."""
    trigger = CronTrigger("0 12 * * *")
    assert trigger.next_after(utc(2026, 5, 1, 12)) == utc(2026, 5, 2, 12)


def test_cron_microseconds_before_fire() -> None:
    """A time one microsecond before a fire time returns that fire time."""
    trigger = CronTrigger("*/5 * * * *")
    after = datetime(2026, 1, 1, 10, 4, 59, 999_999, tzinfo=UTC)
    assert trigger.next_after(after) == utc(2026, 1, 1, 10, 5)


def test_cron_result_is_utc() -> None:
    """Results carry the UTC tzinfo, whatever the zone of the schedule and of ``after``."""
    trigger = CronTrigger("0 9 * * *", timezone=BERLIN)
    result = trigger.next_after(datetime(2026, 1, 1, tzinfo=ZoneInfo(NEW_YORK)))
    assert result.tzinfo is UTC
    assert result == utc(2026, 1, 1, 8)


def test_cron_after_in_other_zone() -> None:
    """``after`` in any zone is the same instant as its UTC form."""
    trigger = CronTrigger("17 * * * *", timezone=SYDNEY)
    local_after = datetime(2026, 4, 5, 2, 30, tzinfo=ZoneInfo(SYDNEY), fold=1)
    assert trigger.next_after(local_after) == trigger.next_after(local_after.astimezone(UTC))


# --- days: either field matches ------------------------------------------------------------
# January 2026 starts on a Thursday. February and March 2026 start on a Sunday.


def test_cron_day_or_friday_thirteenth() -> None:
    """``0 0 13 * 5`` fires on Fridays and the 13th, so Friday 13 Feb fires once."""
    trigger = CronTrigger("0 0 13 * 5")
    assert collect_fires(trigger, utc(2026, 2, 1), 6) == [
        utc(2026, 2, 6),
        utc(2026, 2, 13),
        utc(2026, 2, 20),
        utc(2026, 2, 27),
        utc(2026, 3, 6),
        utc(2026, 3, 13),
    ]


def test_cron_day_or_first_monday() -> None:
    """``0 0 1 * 1#1`` fires on the 1st and on the first Monday of each month."""
    trigger = CronTrigger("0 0 1 * 1#1")
    assert collect_fires(trigger, utc(2025, 12, 31, 12), 6) == [
        utc(2026, 1, 1),
        utc(2026, 1, 5),
        utc(2026, 2, 1),
        utc(2026, 2, 2),
        utc(2026, 3, 1),
        utc(2026, 3, 2),
    ]


def test_cron_day_or_last_friday() -> None:
    """``0 0 15 * L5`` fires on the 15th and on the last Friday of each month."""
    trigger = CronTrigger("0 0 15 * L5")
    assert collect_fires(trigger, utc(2026, 1, 1), 6) == [
        utc(2026, 1, 15),
        utc(2026, 1, 30),
        utc(2026, 2, 15),
        utc(2026, 2, 27),
        utc(2026, 3, 15),
        utc(2026, 3, 27),
    ]


def test_cron_day_or_last_day() -> None:
    """``0 0 L * 5`` fires on Fridays and on the last day of the month."""
    trigger = CronTrigger("0 0 L * 5")
    assert collect_fires(trigger, utc(2026, 1, 20), 4) == [
        utc(2026, 1, 23),
        utc(2026, 1, 30),
        utc(2026, 1, 31),
        utc(2026, 2, 6),
    ]


def test_cron_third_tuesday() -> None:
    """``0 0 * * 2#3`` fires on the third Tuesday: 20 January and 17 February 2026."""
    trigger = CronTrigger("0 0 * * 2#3")
    assert collect_fires(trigger, utc(2026, 1, 1), 2) == [utc(2026, 1, 20), utc(2026, 2, 17)]


def test_cron_impossible_day_or_weekday() -> None:
    """``0 0 30 2 1`` is valid: 30 February never comes, but Mondays in February do."""
    trigger = CronTrigger("0 0 30 2 1")
    assert collect_fires(trigger, utc(2026, 1, 1), 2) == [utc(2026, 2, 2), utc(2026, 2, 9)]


def test_cron_leap_day() -> None:
    """``0 0 29 2 *`` fires only in leap years."""
    trigger = CronTrigger("0 0 29 2 *")
    assert collect_fires(trigger, utc(2026, 1, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]


def test_cron_last_day_of_february() -> None:
    """``L`` in February is the 28th, or the 29th in a leap year."""
    trigger = CronTrigger("0 0 L 2 *")
    assert collect_fires(trigger, utc(2026, 1, 1), 3) == [
        utc(2026, 2, 28),
        utc(2027, 2, 28),
        utc(2028, 2, 29),
    ]


def test_cron_rare_fifth_monday() -> None:
    """The fifth Monday of February comes 40 years after 2072, as 2100 is not a leap year."""
    trigger = CronTrigger("0 0 * 2 1#5")
    assert trigger.next_after(utc(2072, 3, 1)) == utc(2112, 2, 29)


# --- invalid expressions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "* * * * 1#6",
        "* * * * 1#1,2",
        "0 0 * * 5L",
        "every day",
        "@reboot",
        "@often",
        "H * * * *",
        "R * * * *",
        "0 0 * * * R",
    ],
)
def test_cron_invalid_expression_rejected(expression: str) -> None:
    """A malformed expression raises InvalidScheduleError naming the expression."""
    pattern = rf"^invalid cron expression {re.escape(repr(expression))}: "
    with pytest.raises(InvalidScheduleError, match=pattern):
        CronTrigger(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 30 2 *",
        "0 0 31 4 *",
        "0 0 30,31 2 *",
        "0 0 31 2,4,6,9,11 *",
        "* * 31 2,4,6,9,11 *",
        "0 0 0 30 2 *",
    ],
)
def test_cron_never_firing_rejected(expression: str) -> None:
    """An expression whose days never occur raises InvalidScheduleError saying so."""
    pattern = rf"^cron expression {re.escape(repr(expression))} can never fire: "
    with pytest.raises(InvalidScheduleError, match=pattern):
        CronTrigger(expression)


def test_cron_error_schedule_is_name() -> None:
    """The error's ``schedule`` is the schedule name when one is given."""
    with pytest.raises(InvalidScheduleError) as caught:
        CronTrigger("0 0 30 2 *", name="report")
    assert caught.value.schedule == "report"


def test_cron_error_schedule_is_expression() -> None:
    """Without a name, the error's ``schedule`` is the expression."""
    with pytest.raises(InvalidScheduleError) as caught:
        CronTrigger("61 * * * *")
    assert caught.value.schedule == "61 * * * *"


def test_cron_unknown_zone_rejected() -> None:
    """An unknown zone name raises InvalidScheduleError naming the zone."""
    with pytest.raises(InvalidScheduleError, match=r"^unknown time zone 'Mars/Olympus' "):
        CronTrigger("* * * * *", timezone="Mars/Olympus")


def test_cron_wrong_argument_types() -> None:
    """A non-string expression or zone raises TypeError naming the parameter."""
    with pytest.raises(TypeError, match=r"^expression must be a string"):
        CronTrigger(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^timezone must be"):
        CronTrigger("* * * * *", timezone=UTC)  # type: ignore[arg-type]


def test_cron_naive_after_rejected() -> None:
    """A naive ``after`` raises ValueError naming ``after``."""
    with pytest.raises(ValueError, match=r"^after must be a timezone-aware datetime"):
        CronTrigger("* * * * *").next_after(datetime(2026, 1, 1))


def test_cron_non_datetime_after_rejected() -> None:
    """An ``after`` that is not a datetime raises TypeError naming ``after``."""
    with pytest.raises(TypeError, match=r"^after must be a datetime"):
        CronTrigger("* * * * *").next_after("2026-01-01")  # type: ignore[arg-type]


def test_cron_past_year_9999_overflows() -> None:
    """No fire time before datetime.max raises OverflowError."""
    with pytest.raises(OverflowError, match=r"no fire time after"):
        CronTrigger("0 0 1 1 *").next_after(utc(9999, 6, 1))


def test_cron_attributes_and_description() -> None:
    """The trigger exposes its expression, zone and a readable description."""
    trigger = CronTrigger(" */5 * * * * ", timezone=ZoneInfo("Europe/Paris"))
    assert trigger.expression == "*/5 * * * *"
    assert trigger.timezone == ZoneInfo("Europe/Paris")
    assert trigger.description == "cron '*/5 * * * *' in Europe/Paris"
    assert isinstance(trigger, Trigger)


# --- daylight saving -----------------------------------------------------------------------
# New York 2026: 02:00 EST -> 03:00 EDT on 8 March, 02:00 EDT -> 01:00 EST on 1 November.
# Berlin 2026: 02:00 CET -> 03:00 CEST on 29 March, 03:00 CEST -> 02:00 CET on 25 October.
# Lord Howe 2026: 02:00 -> 01:30 (+11:00 -> +10:30) on 5 April, 02:00 -> 02:30 on 4 October.
# Sydney 2026: 03:00 AEDT -> 02:00 AEST on 5 April, 02:00 AEST -> 03:00 AEDT on 4 October.


def test_dst_fixed_time_gap_shifts_later() -> None:
    """02:30 in New York's spring gap fires at 03:30 EDT, then daily at 02:30 EDT."""
    trigger = CronTrigger("30 2 * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 3, 6, 12), 3) == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 9, 6, 30),
    ]


def test_dst_fixed_time_repeat_fires_once() -> None:
    """01:30 on New York's fall-back day fires once, at the first (EDT) occurrence."""
    trigger = CronTrigger("30 1 * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 10, 30, 12), 3) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


def test_dst_fixed_time_after_first_occurrence() -> None:
    """During the second 01:xx hour the next 01:30 fire is the following day's."""
    trigger = CronTrigger("30 1 * * *", timezone=NEW_YORK)
    assert trigger.next_after(utc(2026, 11, 1, 6)) == utc(2026, 11, 2, 6, 30)


def test_dst_fixed_time_gap_inside_search() -> None:
    """Just after the spring change, the shifted 02:30 fire is still ahead."""
    trigger = CronTrigger("30 2 * * *", timezone=NEW_YORK)
    assert trigger.next_after(utc(2026, 3, 8, 7, 10)) == utc(2026, 3, 8, 7, 30)


def test_dst_shifted_time_no_duplicate() -> None:
    """02:30 shifted to 03:30 and 03:30 itself fire once, at the same instant."""
    trigger = CronTrigger("30 2,3 * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 3, 8, 5), 3) == [
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 9, 6, 30),
        utc(2026, 3, 9, 7, 30),
    ]


def test_dst_fixed_seconds_in_gap() -> None:
    """A fixed-time seconds expression fires its gap seconds shifted by an hour."""
    trigger = CronTrigger("*/15 * 2 * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 3, 8, 7, 59, 40), 3) == [
        utc(2026, 3, 8, 7, 59, 45),
        utc(2026, 3, 9, 6),
        utc(2026, 3, 9, 6, 0, 15),
    ]


def test_dst_wildcard_fall_back_twice() -> None:
    """``*/30 * * * *`` fires in both 01:xx hours of New York's fall-back."""
    trigger = CronTrigger("*/30 * * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 11, 1, 4, 45), 5) == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 6, 30),
        utc(2026, 11, 1, 7),
    ]


def test_dst_wildcard_spring_skips_gap() -> None:
    """``*/30 * * * *`` skips 02:00 and 02:30 on New York's spring-forward day."""
    trigger = CronTrigger("*/30 * * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 3, 8, 6, 15), 3) == [
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 30),
    ]


def test_dst_hourly_counts_per_day() -> None:
    """``0 * * * *`` fires 23 times on the spring day and 25 on the fall day."""
    trigger = CronTrigger("0 * * * *", timezone=NEW_YORK)
    # Local midnights: 8 March 05:00Z to 9 March 04:00Z, 1 November 04:00Z to 2 November 05:00Z.
    spring = collect_fires(trigger, utc(2026, 3, 8, 4, 59), 24)
    fall = collect_fires(trigger, utc(2026, 11, 1, 3, 59), 26)
    assert sum(1 for f in spring if f < utc(2026, 3, 9, 4)) == 23
    assert sum(1 for f in fall if f < utc(2026, 11, 2, 5)) == 25


def test_dst_full_hour_range_is_wildcard() -> None:
    """An hour field covering all 24 hours (``0-23``) fires in both repeated hours."""
    trigger = CronTrigger("30 0-23 * * *", timezone=NEW_YORK)
    assert collect_fires(trigger, utc(2026, 11, 1, 5), 2) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
    ]


def test_dst_berlin_fixed_spring() -> None:
    """02:30 in Berlin's spring gap fires at 03:30 CEST."""
    trigger = CronTrigger("30 2 * * *", timezone=BERLIN)
    assert collect_fires(trigger, utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]


def test_dst_berlin_fixed_fall() -> None:
    """02:30 on Berlin's fall-back day fires once, at the CEST occurrence."""
    trigger = CronTrigger("30 2 * * *", timezone=BERLIN)
    assert collect_fires(trigger, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_dst_berlin_wildcard_fall() -> None:
    """``*/20 * * * *`` follows elapsed time through Berlin's repeated 02:xx hour."""
    trigger = CronTrigger("*/20 * * * *", timezone=BERLIN)
    assert collect_fires(trigger, utc(2026, 10, 25, 0, 30), 5) == [
        utc(2026, 10, 25, 0, 40),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 1, 20),
        utc(2026, 10, 25, 1, 40),
        utc(2026, 10, 25, 2),
    ]


def test_dst_lord_howe_half_hour_gap() -> None:
    """02:15 in Lord Howe's 30-minute gap fires 30 minutes later, at 02:45 (+11:00)."""
    trigger = CronTrigger("15 2 * * *", timezone=LORD_HOWE)
    assert collect_fires(trigger, utc(2026, 10, 2), 3) == [
        utc(2026, 10, 2, 15, 45),
        utc(2026, 10, 3, 15, 45),
        utc(2026, 10, 4, 15, 15),
    ]


def test_dst_lord_howe_fixed_repeat() -> None:
    """01:45 on Lord Howe's fall-back day fires once, at the +11:00 occurrence."""
    trigger = CronTrigger("45 1 * * *", timezone=LORD_HOWE)
    assert collect_fires(trigger, utc(2026, 4, 3), 3) == [
        utc(2026, 4, 3, 14, 45),
        utc(2026, 4, 4, 14, 45),
        utc(2026, 4, 5, 15, 15),
    ]


def test_dst_lord_howe_wildcard_repeat() -> None:
    """``45 * * * *`` fires at both 01:45 occurrences, 30 minutes apart."""
    trigger = CronTrigger("45 * * * *", timezone=LORD_HOWE)
    assert collect_fires(trigger, utc(2026, 4, 4, 13), 4) == [
        utc(2026, 4, 4, 13, 45),
        utc(2026, 4, 4, 14, 45),
        utc(2026, 4, 4, 15, 15),
        utc(2026, 4, 4, 16, 15),
    ]


def test_dst_sydney_fixed_fall() -> None:
    """02:30 on Sydney's April fall-back fires once, at the AEDT occurrence."""
    trigger = CronTrigger("30 2 * * *", timezone=SYDNEY)
    assert collect_fires(trigger, utc(2026, 4, 3), 3) == [
        utc(2026, 4, 3, 15, 30),
        utc(2026, 4, 4, 15, 30),
        utc(2026, 4, 5, 16, 30),
    ]


def test_dst_sydney_fixed_spring() -> None:
    """02:30 in Sydney's October gap fires at 03:30 AEDT."""
    trigger = CronTrigger("30 2 * * *", timezone=SYDNEY)
    assert collect_fires(trigger, utc(2026, 10, 2), 2) == [
        utc(2026, 10, 2, 16, 30),
        utc(2026, 10, 3, 16, 30),
    ]


def test_dst_sydney_wildcard_fall() -> None:
    """``*/30 * * * *`` fires 02:30 AEDT, then 02:00 and 02:30 AEST again."""
    trigger = CronTrigger("*/30 * * * *", timezone=SYDNEY)
    assert collect_fires(trigger, utc(2026, 4, 4, 15), 4) == [
        utc(2026, 4, 4, 15, 30),
        utc(2026, 4, 4, 16),
        utc(2026, 4, 4, 16, 30),
        utc(2026, 4, 4, 17),
    ]


# --- cron properties -----------------------------------------------------------------------

ZONES = [
    "UTC",
    NEW_YORK,
    BERLIN,
    LORD_HOWE,
    SYDNEY,
    "America/Santiago",
    "America/Sao_Paulo",
    "Europe/Dublin",
    "Pacific/Chatham",
    "Asia/Kolkata",
]


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        st.sampled_from([2, 3, 5, 10, 15, 20, 30]).map(lambda step: f"*/{step}"),
        number.map(str),
        st.tuples(number, number).map(lambda pair: f"{min(pair)}-{max(pair)}"),
        st.lists(number, min_size=2, max_size=3, unique=True).map(
            lambda values: ",".join(map(str, sorted(values)))
        ),
    )


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Draw a 5- or 6-field expression from a small grammar of field forms."""
    minute = draw(_field(0, 59))
    hour = draw(st.one_of(st.sampled_from(["*", "1", "2", "0-3", "1,2", "*/2"]), _field(0, 23)))
    day_of_month = draw(st.one_of(st.just("*"), st.just("L"), _field(1, 28)))
    month = draw(st.one_of(st.just("*"), _field(1, 12)))
    day_of_week = draw(st.one_of(st.just("*"), _field(0, 7)))
    if day_of_month == "*":
        # croniter's own union of the day fields is wrong for '#' and 'L', and the
        # oracle below uses croniter on the whole expression.
        day_of_week = draw(st.one_of(st.just(day_of_week), st.sampled_from(["1#2", "L0", "5#5"])))
    fields = [minute, hour, day_of_month, month, day_of_week]
    if draw(st.booleans()):
        fields.insert(0, draw(st.sampled_from(["0", "30", "*/20", "15,45"])))
    return " ".join(fields)


@cache
def _clock_changes(zone_name: str) -> tuple[datetime, ...]:
    """Return the instants in 2024-2028 at which ``zone_name`` changes its UTC offset."""
    zone = ZoneInfo(zone_name)
    changes = []
    instant = utc(2024, 1, 1)
    offset = instant.astimezone(zone).utcoffset()
    while instant < utc(2029, 1, 1):
        instant += timedelta(hours=1)
        new_offset = instant.astimezone(zone).utcoffset()
        if new_offset != offset:
            changes.append(instant)
        offset = new_offset
    return tuple(changes)


@st.composite
def start_instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """Draw an instant, often within six hours of one of the zone's clock changes."""
    changes = _clock_changes(zone_name)
    near_change = draw(st.booleans())
    if changes and near_change:
        change = draw(st.sampled_from(changes))
        return change + timedelta(seconds=draw(st.integers(-6 * 3600, 6 * 3600)))
    return utc(2024, 1, 1) + timedelta(seconds=draw(st.integers(0, 5 * 365 * 86400)))


def _near_clock_change(zone: ZoneInfo, instant: datetime) -> bool:
    offset = instant.astimezone(zone).utcoffset()
    return any(
        (instant + shift).astimezone(zone).utcoffset() != offset
        for shift in (timedelta(days=-1), timedelta(days=1))
    )


def _wall_clock(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _reference_next_after(trigger: CronTrigger, after: datetime) -> datetime:
    """Find the next fire by brute force: map every wall time near ``after`` with zoneinfo."""
    zone = trigger.timezone
    seconds_first = len(trigger.expression.split()) == 6
    expanded, _ = croniter.expand(trigger.expression, second_at_beginning=seconds_first)
    wildcard = expanded[1] == ["*"]
    margin = timedelta(hours=4)
    walls = croniter(
        trigger.expression,
        _wall_clock(zone, after) - margin,
        ret_type=datetime,
        second_at_beginning=seconds_first,
        max_years_between_matches=400,
    )
    best: datetime | None = None
    while True:
        wall = walls.get_next(datetime)
        if best is not None and wall > _wall_clock(zone, best) + margin:
            return best
        folds = (0, 1) if wildcard else (0,)
        for fold in folds:
            instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if wildcard and _wall_clock(zone, instant) != wall:
                continue  # the wall time falls in a gap
            if instant > after and (best is None or instant < best):
                best = instant


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), expression=cron_expressions(), zone_name=st.sampled_from(ZONES))
def test_cron_property_matches_brute_force(
    data: st.DataObject, expression: str, zone_name: str
) -> None:
    """Fires strictly increase and equal a brute-force zoneinfo mapping of wall times."""
    trigger = CronTrigger(expression, timezone=zone_name)
    after = data.draw(start_instants(zone_name))
    for _ in range(4):
        fire = trigger.next_after(after)
        assert fire > after
        assert fire == _reference_next_after(trigger, after)
        after = fire


@settings(max_examples=80, deadline=None)
@given(data=st.data(), expression=cron_expressions(), zone_name=st.sampled_from(ZONES))
def test_cron_property_wall_clock_matches(
    data: st.DataObject, expression: str, zone_name: str
) -> None:
    """Away from clock changes, each fire's local time matches and none is skipped."""
    trigger = CronTrigger(expression, timezone=zone_name)
    zone = trigger.timezone
    seconds_first = len(expression.split()) == 6
    previous = trigger.next_after(data.draw(start_instants(zone_name)))
    for _ in range(4):
        fire = trigger.next_after(previous)
        assert fire > previous
        assume(not _near_clock_change(zone, previous) and not _near_clock_change(zone, fire))
        local = _wall_clock(zone, fire)
        assert croniter.match(expression, local, second_at_beginning=seconds_first)
        walls = croniter(
            expression,
            _wall_clock(zone, previous),
            ret_type=datetime,
            second_at_beginning=seconds_first,
            max_years_between_matches=400,
        )
        assert walls.get_next(datetime) == local
        previous = fire


# --- intervals -----------------------------------------------------------------------------


def test_interval_default_epoch_grid() -> None:
    """Every 5 minutes from the default epoch anchor fires at :00, :05, :10."""
    trigger = IntervalTrigger(timedelta(minutes=5))
    assert collect_fires(trigger, utc(2026, 1, 1, 0, 3, 17), 3) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 0, 10),
        utc(2026, 1, 1, 0, 15),
    ]


def test_interval_grid_point_strictly_later() -> None:
    """``after`` on a grid point returns the next grid point."""
    trigger = IntervalTrigger(timedelta(hours=1))
    assert trigger.next_after(utc(2026, 1, 1, 5)) == utc(2026, 1, 1, 6)


def test_interval_before_anchor() -> None:
    """Times before the anchor still get the next grid point."""
    trigger = IntervalTrigger(timedelta(minutes=10), anchor=utc(2026, 1, 1, 12, 3))
    assert trigger.next_after(utc(2026, 1, 1, 11, 55)) == utc(2026, 1, 1, 12, 3)


def test_interval_sub_second() -> None:
    """A 250 ms interval fires on the 250 ms grid."""
    trigger = IntervalTrigger(timedelta(milliseconds=250))
    after = datetime(2026, 1, 1, 0, 0, 0, 300_000, tzinfo=UTC)
    assert trigger.next_after(after) == datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


def test_interval_elapsed_time_across_dst() -> None:
    """A daily grid anchored at 12:00 CET fires at 13:00 CEST after the spring change."""
    paris = ZoneInfo("Europe/Paris")
    anchor = datetime(2026, 3, 28, 12, tzinfo=paris)
    trigger = IntervalTrigger(timedelta(days=1), anchor=anchor)
    # Same tzinfo on both sides: Python would subtract them as wall-clock times.
    after = datetime(2026, 3, 29, 12, 30, tzinfo=paris)
    assert trigger.next_after(after) == utc(2026, 3, 29, 11)


def test_interval_result_is_utc() -> None:
    """Results carry the UTC tzinfo even when the anchor has another zone."""
    anchor = datetime(2026, 1, 1, tzinfo=ZoneInfo(NEW_YORK))
    result = IntervalTrigger(timedelta(hours=1), anchor=anchor).next_after(utc(2026, 1, 1))
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("every", "message"),
    [
        (timedelta(0), r"^every must be a positive timedelta"),
        (timedelta(seconds=-5), r"^every must be a positive timedelta"),
        (timedelta(microseconds=999), r"^every must be at least 1 ms"),
    ],
)
def test_interval_invalid_every(every: timedelta, message: str) -> None:
    """A non-positive or sub-millisecond ``every`` raises InvalidScheduleError."""
    with pytest.raises(InvalidScheduleError, match=message) as caught:
        IntervalTrigger(every, name="poll")
    assert caught.value.schedule == "poll"


def test_interval_one_millisecond_allowed() -> None:
    """``every`` of exactly 1 ms is accepted."""
    trigger = IntervalTrigger(timedelta(milliseconds=1))
    assert trigger.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1) + timedelta(milliseconds=1)


def test_interval_wrong_every_type() -> None:
    """A number instead of a timedelta raises TypeError naming ``every``."""
    with pytest.raises(TypeError, match=r"^every must be a datetime.timedelta"):
        IntervalTrigger(60)  # type: ignore[arg-type]


def test_interval_naive_anchor_rejected() -> None:
    """A naive anchor raises ValueError naming ``anchor``."""
    with pytest.raises(ValueError, match=r"^anchor must be a timezone-aware datetime"):
        IntervalTrigger(timedelta(minutes=1), anchor=datetime(2026, 1, 1))


def test_interval_naive_after_rejected() -> None:
    """A naive ``after`` raises ValueError naming ``after``."""
    with pytest.raises(ValueError, match=r"^after must be a timezone-aware datetime"):
        IntervalTrigger(timedelta(minutes=1)).next_after(datetime(2026, 1, 1))


def test_interval_attributes_and_description() -> None:
    """The trigger exposes ``every``, the default anchor and a readable description."""
    trigger = IntervalTrigger(timedelta(minutes=5))
    assert trigger.every == timedelta(minutes=5)
    assert trigger.anchor == utc(1970, 1, 1)
    assert trigger.description == "every 0:05:00 from 1970-01-01T00:00:00+00:00"
    assert isinstance(trigger, Trigger)


def test_interval_exact_far_future() -> None:
    """An odd microsecond interval stays exactly on the grid centuries later."""
    every = timedelta(microseconds=333_333)
    after = datetime(2999, 7, 1, 3, 4, 5, 678_901, tzinfo=UTC)
    fire = IntervalTrigger(every).next_after(after)
    elapsed = fire - utc(1970, 1, 1)
    assert elapsed % every == timedelta(0)
    assert timedelta(0) < fire - after <= every


@settings(max_examples=150, deadline=None)
@given(
    every_us=st.integers(1_000, 10 * 86_400 * 1_000_000),
    anchor=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    after=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_interval_property_on_grid(every_us: int, anchor: datetime, after: datetime) -> None:
    """Fires strictly increase, lie on the grid and come at most ``every`` after ``after``."""
    every = timedelta(microseconds=every_us)
    trigger = IntervalTrigger(every, anchor=anchor)
    for _ in range(3):
        fire = trigger.next_after(after)
        assert fire > after
        assert fire - after <= every
        assert (fire - anchor) % every == timedelta(0)
        after = fire
