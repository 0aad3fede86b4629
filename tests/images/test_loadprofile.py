"""Load profiles (steady, steps, ramps, spikes): parsing, the schedule of requests they
give, and loadgen following one against the echo image."""

from __future__ import annotations

import pytest

from k8semu.images._loadprofile import ProfileError, parse_profile
from tests.images.conftest import ImageProcess
from tests.images.test_loadgen import run_loadgen


def count_until(text: str, t: float) -> int:
    profile = parse_profile(text)
    n = 0
    while (due := profile.time_of(n)) is not None and due < t:
        n += 1
    return n


def test_steady_and_steps_hold_their_rates() -> None:
    assert count_until("10/2s", 99) == 20
    steps = parse_profile("10/1s,20/1s,40/1s")
    assert steps.duration == 3
    assert count_until("10/1s,20/1s,40/1s", 1.0) == 10
    assert count_until("10/1s,20/1s,40/1s", 2.0) == 30
    assert count_until("10/1s,20/1s,40/1s", 99) == 70
    assert steps.rate_at(1.5) == 20 and steps.rate_at(5) == 0


def test_ramp_spike_and_drop() -> None:
    # 0 -> 100/s over 2 s is 100 requests, the first half-second holding 6.25 of them.
    assert count_until("0-100/2s", 99) == 100
    assert count_until("0-100/2s", 0.5) == 7
    ramp = parse_profile("0-100/2s")
    assert ramp.rate_at(1.0) == pytest.approx(50)
    assert count_until("10/1s,200/100ms,10/1s", 99) == 40
    # A drop to 0 sends nothing more, and the profile then ends.
    assert count_until("20/1s,0/1s", 99) == 20
    assert parse_profile("20/1s,0/1s").time_of(20) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("10", "RATE/DURATION"),
        ("x/1s", "bad rate"),
        ("10/soon", "bad duration"),
        ("-5/1s", "bad rate"),
        ("10/0s", "duration must be > 0"),
        ("10/1s,20-/1s", "bad rate"),
        ("10/100000s", "duration must be > 0"),
    ],
)
def test_bad_profiles_name_the_segment(text: str, words: str) -> None:
    with pytest.raises(ProfileError, match=words):
        parse_profile(text)


def test_loadgen_follows_a_profile(start_image: object) -> None:
    start = start_image  # the fixture
    echo: ImageProcess = start("echo", "--listen=127.0.0.62:0", "--quiet")  # type: ignore[operator]
    host, port = echo.address()
    summary, out = run_loadgen(
        "--url", f"http://{host}:{port}/", "--profile", "20/500ms,0-40/500ms,0/200ms",
        "--progress", "0.4", "-c", "4",
    )  # fmt: skip
    # 10 + 10 requests, then the quiet tail; it stops by itself when the profile ends.
    assert summary["requests"] == 20 and summary["errors"] == 0
    assert summary["profile"] is True
    assert "target=" in out
    summary, _ = run_loadgen(
        "--url", f"http://{host}:{port}/", "-c", "1", env={"LOADGEN_PROFILE": "10/300ms"}
    )
    assert summary["requests"] == 3
