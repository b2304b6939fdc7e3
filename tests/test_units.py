import pytest

from colabkit.errors import ColabkitError
from colabkit.units import format_bytes, format_duration, parse_duration, parse_percent


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("30s", 30), ("15m", 900), ("1h30m", 5400), ("2.5h", 9000), (" 1h 5s ", 3605), (7, 7),
])
def test_durations_people_write(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15x", "m", "1h30", "ten minutes", "-5", "1m-1s"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ColabkitError, match="30s, 15m, 1h30m|cannot be negative"):
        parse_duration(text)


def test_formats():
    assert format_duration(3 * 3600 + 5 * 60) == "3h 05m"
    assert format_duration(750) == "12m 30s"
    assert format_duration(None) == "n/a"
    assert format_bytes(15 * 1024**3) == "15.0 GiB"
    assert format_bytes(None) == "n/a"


def test_percentages():
    assert parse_percent("90") == pytest.approx(0.9)
    assert parse_percent("85%") == pytest.approx(0.85)
    assert parse_percent(0.5) == 0.5
    assert parse_percent("1") == 0.01 and parse_percent("100") == 1.0
    assert parse_percent("0.5%") == pytest.approx(0.005) and parse_percent("100%") == 1.0
    for bad in ("lots", "0", "150", "150%", "0%"):
        with pytest.raises(ColabkitError):
            parse_percent(bad)
