"""Cron schedules as Kubernetes' CronJobs read them: a standard 5-field expression or a
descriptor (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly), evaluated in
an IANA time zone (croniter for the expression, zoneinfo for the zone). Shared by the API
server's checks and the CronJob controller. Pure: no I/O beyond zoneinfo's database.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_MISSED = 100  # Kubernetes gives up counting missed start times beyond this


def schedule_problem(schedule: str) -> str | None:
    """Why `schedule` is not a schedule Kubernetes accepts, or None."""
    text = schedule.strip()
    if not text:
        return "Required value"
    if text.startswith(("TZ=", "CRON_TZ=")):
        return (
            f'Invalid value: "{schedule}": cannot use TZ or CRON_TZ in schedule,'
            " use timeZone field instead"
        )
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            return f'Invalid value: "{schedule}": unrecognized descriptor: {text}'
        return None
    if len(text.split()) != 5 or not croniter.is_valid(text):
        return f'Invalid value: "{schedule}": expected a 5-field cron expression'
    return None


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_zone() -> tzinfo:
    """This process's local time zone (a CronJob without spec.timeZone runs in it)."""
    found = datetime.now().astimezone().tzinfo
    assert found is not None
    return found


def most_recent(schedule: str, tz: tzinfo, after: float, now: float) -> tuple[float | None, int]:
    """The last schedule time in (`after`, `now`] (epoch seconds) and how many there were,
    counted up to MAX_MISSED + 1."""
    times = croniter(schedule.strip(), datetime.fromtimestamp(after, tz))
    latest: float | None = None
    missed = 0
    while (t := float(times.get_next(float))) <= now:
        latest, missed = t, missed + 1
        if missed > MAX_MISSED:
            # Too many to walk: the last one is the one before now (now itself included).
            before = croniter(schedule.strip(), datetime.fromtimestamp(now + 0.001, tz))
            return float(before.get_prev(float)), missed
    return latest, missed


def next_after(schedule: str, tz: tzinfo, now: float) -> float:
    """The first schedule time after `now` (epoch seconds)."""
    return float(croniter(schedule.strip(), datetime.fromtimestamp(now, tz)).get_next(float))
