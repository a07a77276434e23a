"""`actors.cron.Cadence`: when ticks fall, across daylight saving time, and what is refused;
`plan_ticks`: which due ticks a firing round enqueues."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from actors.cron import Cadence, tick_text
from actors.errors import InvalidArgument
from actors.queue.base import plan_ticks
from actors.queue.model import NewSchedule

BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int, tz: object = BERLIN) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[arg-type,misc]


def local(t: float) -> str:
    return datetime.fromtimestamp(t, BERLIN).isoformat()


def ticks(cadence: Cadence, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = cadence.next_after(t)
        out.append(local(t))
    return out


def test_a_daily_tick_in_the_hour_skipped_in_spring_runs_once_when_the_clocks_moved_on() -> None:
    # 2026-03-29 02:00 CET became 03:00 CEST: 02:30 does not exist that day.
    daily = Cadence("30 2 * * *", None, "Europe/Berlin")
    assert ticks(daily, at(2026, 3, 28, 12, 0), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_daily_tick_in_the_hour_repeated_in_autumn_runs_once() -> None:
    # 2026-10-25 03:00 CEST became 02:00 CET: 02:30 happens twice; the job runs once.
    daily = Cadence("30 2 * * *", None, "Europe/Berlin")
    got = ticks(daily, at(2026, 10, 24, 12, 0), 3)
    assert got == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # 25 h between the first two: a day of local time, not 24 h of absolute time.
    first = daily.next_after(at(2026, 10, 24, 12, 0))
    second = daily.next_after(first)
    assert second - first == 25 * 3600


def test_a_sub_hourly_schedule_keeps_its_absolute_rhythm_through_the_repeated_hour() -> None:
    half_hourly = Cadence("*/30 * * * *", None, "Europe/Berlin")
    got = [half_hourly.next_after(at(2026, 10, 25, 1, 50))]
    for _ in range(4):
        got.append(half_hourly.next_after(got[-1]))
    assert [b - a for a, b in itertools.pairwise(got)] == [1800.0] * 4


def test_the_same_expression_in_two_zones_ticks_at_their_own_local_times() -> None:
    utc = Cadence("0 9 * * *", None, "UTC")
    ny = Cadence("0 9 * * *", None, "America/New_York")
    start = at(2026, 7, 1, 0, 0, tz=UTC)
    assert utc.next_after(start) == at(2026, 7, 1, 9, 0, tz=UTC)
    assert ny.next_after(start) == at(2026, 7, 1, 13, 0, tz=UTC)  # EDT is UTC-4


def test_previous_before_steps_back_over_a_dst_change_too() -> None:
    daily = Cadence("30 2 * * *", None, "Europe/Berlin")
    assert local(daily.previous_before(at(2026, 3, 30, 0, 0))) == "2026-03-29T03:00:00+02:00"


def test_an_interval_ticks_at_multiples_of_its_seconds_whatever_the_zone() -> None:
    every = Cadence(None, 600, "Asia/Kolkata")
    assert every.next_after(1_700_000_001.5) == 1_700_000_400.0
    assert every.next_after(1_700_000_400.0) == 1_700_001_000.0
    assert every.previous_before(1_700_000_400.0) == 1_699_999_800.0


def test_six_fields_tick_by_the_second() -> None:
    assert Cadence("*/15 * * * * *", None, "UTC").next_after(60.0) == 75.0


@pytest.mark.parametrize(
    ("cron", "interval", "zone", "says"),
    [
        ("61 * * * *", None, "UTC", "cron '61 * * * *' is not a cron expression: Bad minute"),
        ("* * *", None, "UTC", "Wrong number of fields"),
        ("0 0 30 2 *", None, "UTC", "not a cron expression"),
        ("0 0 * * *", None, "Mars/Olympus", "timezone 'Mars/Olympus' is not a time zone"),
        ("0 0 * * *", None, "../etc/passwd", "is not a time zone"),
        ("0 0 * * *", 60, "UTC", "not both"),
        (None, None, "UTC", "not neither"),
        (None, 0, "UTC", "interval_seconds must be between 1"),
    ],
)
def test_a_bad_cadence_is_one_clear_error(
    cron: str | None, interval: int | None, zone: str, says: str
) -> None:
    with pytest.raises(InvalidArgument, match=says.replace("*", r"\*")):
        Cadence(cron, interval, zone)


def plan(cron: str, next_tick: float, now: float, **options: object) -> list[str]:
    fields = {"name": "s", "tenant_id": "t", "r2_key": "t/a", "cron": cron, **options}
    schedule = msgspec.convert(fields, NewSchedule)
    cadence = Cadence(cron, None, "UTC")
    due, following = plan_ticks(cadence, next_tick, now, schedule)
    assert following == cadence.next_after(now)  # what is not enqueued now never will be
    return [tick_text(t) for t in due]


def test_a_round_enqueues_each_tick_within_the_grace_and_catches_up_or_skips_older_ones() -> None:
    hourly, start = "0 * * * *", at(2026, 1, 1, 0, 0, tz=UTC)
    # On time: the tick due now.
    assert plan(hourly, start, start + 5) == ["20260101T000000Z"]
    # 90 s late with a grace of 60: missed; caught up once, or skipped.
    assert plan(hourly, start, start + 90) == ["20260101T000000Z"]
    assert plan(hourly, start, start + 90, missed="skip") == []
    # Down for 3.5 hours: three ticks missed, one job for the latest of them.
    assert plan(hourly, start, start + 3.5 * 3600) == ["20260101T030000Z"]
    assert plan(hourly, start, start + 3.5 * 3600, missed="skip") == []
    # A grace of two hours: the two ticks within it run on their own, the older one catches up.
    assert plan(hourly, start, start + 3.5 * 3600, grace_seconds=7200) == [
        "20260101T010000Z",
        "20260101T020000Z",
        "20260101T030000Z",
    ]
