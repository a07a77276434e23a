"""The configuration: defaults, the file, the environment, and every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from actors.config import Config, Secret, dump_config, load_config
from actors.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(text)
    return path


def test_the_shipped_default_file_equals_the_embedded_defaults() -> None:
    loaded = load_config(ROOT / "config" / "actors.toml", env={})
    assert msgspec.structs.replace(loaded, source=None) == Config()


def test_no_file_at_all_gives_the_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}) == Config()


def test_actors_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[pipeline]\nconcurrency = 7\n")
    assert load_config(env={"ACTORS_CONFIG": str(path)}).pipeline.concurrency == 7


def test_an_unknown_key_is_refused_with_the_table_and_its_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue]\nvisibility_secs = 30\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "[queue] has no key `visibility_secs`" in message
    assert "visibility_seconds" in message


def test_a_mistyped_key_or_table_gets_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[queue]\npaht = 'q.db'\n"), env={})
    assert "[queue] has no key `paht`; did you mean 'path'? (its keys are backend, path," in str(
        info.value
    )
    with pytest.raises(
        ConfigError, match=r"unknown table \[procesor\]; did you mean 'processor'\?"
    ):
        load_config(write(tmp_path, "[procesor]\nkind = 'local'\n"), env={})
    # Nothing close: no suggestion, only the list.
    with pytest.raises(ConfigError, match=r"has no key `zzz` \(a typo\?\); its keys are"):
        load_config(write(tmp_path, "[queue]\nzzz = 1\n"), env={})


def test_an_unknown_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown table \[queu\]"):
        load_config(write(tmp_path, "[queu]\npath = 'x'\n"), env={})


def test_a_value_of_the_wrong_type_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[pipeline\]\.concurrency: Expected `int`, got `str`"):
        load_config(write(tmp_path, "[pipeline]\nconcurrency = 'many'\n"), env={})


def test_an_out_of_range_value_names_the_key_and_the_bound(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"\[queue\]\.visibility_seconds: Expected `float` <= 3600"
    ):
        load_config(write(tmp_path, "[queue]\nvisibility_seconds = 7200\n"), env={})


def test_a_value_outside_its_choices_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[queue\]\.durability: Invalid enum value 'fsync'"):
        load_config(write(tmp_path, "[queue]\ndurability = 'fsync'\n"), env={})


def test_values_that_contradict_each_other_are_refused(tmp_path: Path) -> None:
    text = "[supervision]\nbackoff_min_seconds = 20\nbackoff_max_seconds = 10\n"
    with pytest.raises(ConfigError, match=r"backoff_min_seconds = 20 is more than backoff_max"):
        load_config(write(tmp_path, text), env={})


def test_malformed_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_config(write(tmp_path, "[queue\npath = 1\n"), env={})


def test_a_missing_explicit_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variables only"):
        load_config(write(tmp_path, "[secrets]\ngoogle_api_key = 'k'\n"), env={})


def test_the_seeds_environment_variables_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue]\nbatch_size = 5\n")
    config = load_config(
        path,
        env={
            "BATCH_SIZE": "25",
            "VISIBILITY_TIMEOUT": "90",
            "GEMINI_CHAT_MODEL": "m",
            "R2_BUCKET": "b",
            "AI_GATEWAY_URL": "http://gw",
        },
    )
    assert config.queue.batch_size == 25
    assert config.queue.visibility_seconds == 90.0
    assert config.processor.chat_model == "m"
    assert config.processor.base_url == "http://gw"
    assert config.storage.bucket == "b"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"BATCH_SIZE='lots' \(sets \[queue\]\.batch_size\)"):
        load_config(None, env={"BATCH_SIZE": "lots", "ACTORS_CONFIG": ""})
    with pytest.raises(ConfigError, match=r"VISIBILITY_TIMEOUT='9999'.*<= 3600"):
        load_config(None, env={"VISIBILITY_TIMEOUT": "9999"})


def test_secrets_come_from_the_environment_and_never_print(tmp_path: Path) -> None:
    config = load_config(None, env={"GOOGLE_API_KEY": "sk-123", "EDGE_API_TOKEN": "tok-456"})
    assert config.secrets.google_api_key == Secret("sk-123")
    assert config.secrets.api_token is not None
    assert config.secrets.api_token.reveal() == "tok-456"
    shown = dump_config(config) + repr(config) + str(config.secrets)
    assert "sk-123" not in shown
    assert "tok-456" not in shown
    assert "google_api_key: set (********)" in dump_config(config)


def test_dump_config_round_trips_through_load_config(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "[pipeline]\nfetchers = 9\n[log]\nlevel = 'debug'\n"), env={}
    )
    again = load_config(write(tmp_path, dump_config(config)), env={})
    assert msgspec.structs.replace(again, source=None) == msgspec.structs.replace(
        config, source=None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Retry bases and caps: at most a day (1e308 s scheduled a retry in the year 10^307).
        ("[queue]\nretry_base_seconds = 1e308\n", r"\[queue\]\.retry_base_seconds: .* <= 86400"),
        ("[queue]\nretry_cap_seconds = 1e9\n", r"\[queue\]\.retry_cap_seconds: .* <= 86400"),
        ("[storage]\nretry_base_seconds = -1\n", r"\[storage\]\.retry_base_seconds: .* >= 0"),
        ("[processor]\nretry_cap_seconds = inf\n", r"\[processor\]\.retry_cap_seconds: .*"),
        ("[supervision]\nbackoff_max_seconds = 1e12\n", r"\[supervision\]\.backoff_max_sec"),
        # Intervals: not a busy loop, not a loop that never wakes.
        ("[queue]\npoll_interval_seconds = 1e-9\n", r"\[queue\]\.poll_interval_seconds: .*0\.001"),
        ("[queue]\nreap_interval_seconds = 1e6\n", r"\[queue\]\.reap_interval_seconds: .* <= 3600"),
        ("[pipeline]\nrun_idle_seconds = 0\n", r"\[pipeline\]\.run_idle_seconds: .* >= 0\.001"),
        ("[pipeline]\nack_window_seconds = 3600\n", r"\[pipeline\]\.ack_window_seconds: .* <= 60"),
        # Timeouts and durations.
        ("[storage]\ntimeout_seconds = 1e300\n", r"\[storage\]\.timeout_seconds: .* <= 3600"),
        ("[processor]\ntimeout_seconds = 0\n", r"\[processor\]\.timeout_seconds: .* >= 0\.001"),
        ("[pipeline]\nshutdown_grace_seconds = 1e9\n", r"\[pipeline\]\.shutdown_grace_sec"),
        ("[supervision]\nmax_seconds = 0\n", r"\[supervision\]\.max_seconds: .* >= 0\.001"),
        ("[queue]\nretention_seconds = 1e20\n", r"\[queue\]\.retention_seconds: .* <= 315360000"),
        # Sizes and counts.
        ("[pipeline]\nmax_object_bytes = 1099511627776\n", r"\[pipeline\]\.max_object_bytes: .*"),
        ("[storage]\nmultipart_threshold_bytes = 10000000000000\n", r"\[storage\]\.multipart_"),
        ("[supervision]\nmax_restarts = 1000000000\n", r"\[supervision\]\.max_restarts: .*"),
        ("[processor]\ntokens_per_minute = 0\n", r"\[processor\]\.tokens_per_minute: .* >= 1"),
        ("[processor]\nmax_prompt_chars = 1000000000\n", r"\[processor\]\.max_prompt_chars: "),
        # Paths.
        ('[queue]\npath = ""\n', r"\[queue\]\.path: expected a file path: not empty or blank"),
        ('[queue]\npath = "   "\n', r"\[queue\]\.path: expected a file path"),
        ('[storage]\nroot = ""\n', r"\[storage\]\.root: expected a file path"),
        (f'[storage]\nroot = "{"a" * 5000}"\n', r"\[storage\]\.root: expected a file path"),
    ],
)
def test_every_value_is_bounded_and_a_value_out_of_bounds_names_its_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


def test_values_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "[queue]\nretry_base_seconds = 86400\nretry_cap_seconds = 86400\n"
            "poll_interval_seconds = 0.001\nretention_seconds = 0\n"
            "[pipeline]\nmax_object_bytes = 1073741824\nshutdown_grace_seconds = 0\n"
            "[storage]\nroot = 'objects'\n",
        ),
        env={},
    )
    assert config.queue.retry_base_seconds == 86400
    assert config.pipeline.max_object_bytes == 1024**3


@pytest.mark.parametrize("table", ["storage", "processor"])
def test_a_retry_base_over_its_cap_is_refused_in_every_table(tmp_path: Path, table: str) -> None:
    text = f"[{table}]\nretry_base_seconds = 10\nretry_cap_seconds = 5\n"
    with pytest.raises(ConfigError, match=rf"\[{table}\]\.retry_base_seconds = 10 is more than"):
        load_config(write(tmp_path, text), env={})


def test_an_environment_override_is_bounded_too() -> None:
    with pytest.raises(ConfigError, match=r"VISIBILITY_TIMEOUT='1e308' \(sets \[queue\]"):
        load_config(None, env={"VISIBILITY_TIMEOUT": "1e308"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue]\nretry_base_seconds = 1e308\n", "[queue].retry_base_seconds: Expected `float`"),
        ('[queue]\npath = ""\n', "[queue].path: expected a file path: not empty or blank"),
    ],
)
def test_config_check_refuses_an_unbounded_value_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


# --- [[schedules]] -------------------------------------------------------------------------------

SCHEDULE = """
[[schedules]]
name = "nightly"
tenant_id = "acme"
r2_key = "acme/reports/daily.md"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
payload = { kind = "report", pages = [1, 2], deep = { x = "y" } }
"""


def test_schedules_are_an_array_of_tables_that_dump_config_round_trips(tmp_path: Path) -> None:
    every = '[[schedules]]\nname = "tick"\ntenant_id = "acme"\nr2_key = "acme/t"\n'
    config = load_config(write(tmp_path, SCHEDULE + every + "interval_seconds = 10\n"), env={})
    nightly, tick = config.schedules
    assert (nightly.cron, nightly.timezone, nightly.missed, nightly.grace_seconds) == (
        "30 2 * * *",
        "Europe/Berlin",
        "catch_up",
        60.0,
    )
    assert nightly.payload == {"kind": "report", "pages": [1, 2], "deep": {"x": "y"}}
    assert (tick.cron, tick.interval_seconds, tick.timezone) == (None, 10, "UTC")
    again = load_config(write(tmp_path, dump_config(config)), env={})
    assert again.schedules == config.schedules


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('cron = "30 2 * * *"', 'cron = "61 2 * * *"'),
            "[[schedules]] #1 ('nightly'): cron '61 2 * * *' is not a cron expression: Bad "
            "minute. Write five fields",
        ),
        (
            ('"Europe/Berlin"', '"Europe/Berlim"'),
            "[[schedules]] #1 ('nightly'): timezone 'Europe/Berlim' is not a time zone",
        ),
        (
            ('cron = "30 2 * * *"', "interval_seconds = 5\ncron = '* * * * *'"),
            "either cron (e.g. '*/10 * * * *') or interval_seconds, not both",
        ),
        (('cron = "30 2 * * *"', ""), "not neither"),
        (("name =", "nmae ="), "[[schedules]] #1 has no key `nmae`; did you mean 'name'?"),
        (
            ('name = "nightly"', 'name = "nightly"\nmissed = "later"'),
            "[[schedules]] #1, missed: Invalid enum value 'later'",
        ),
        (('"nightly"', '"night/ly"'), "[[schedules]] #1, name: expected a schedule name: 1 to"),
        (('"Europe/Berlin"', '""'), "[[schedules]] #1, timezone: expected a time zone name"),
        (
            ('timezone = "Europe/Berlin"', "grace_seconds = -1"),
            "[[schedules]] #1, grace_seconds: Expected `float` >= 0",
        ),
    ],
)
def test_a_bad_schedule_is_one_error_naming_the_schedule(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SCHEDULE.replace(*change)), env={})
    assert message in str(info.value)


def test_two_schedules_of_one_name_in_one_tenant_are_refused(tmp_path: Path) -> None:
    twice = SCHEDULE + SCHEDULE.replace('"acme"', '"other"').replace("acme/", "other/")
    assert len(load_config(write(tmp_path, twice), env={}).schedules) == 2
    with pytest.raises(ConfigError, match=r"#2 .*two schedules of this name"):
        load_config(write(tmp_path, SCHEDULE + SCHEDULE), env={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('cron = "30 2 * * *"', 'cron = "30 2 * *"'), "Wrong number of fields"),
        (('"acme/reports', '"other/reports'), "outside the job's tenant prefix 'acme/'"),
    ],
)
def test_config_check_refuses_a_bad_schedule_in_one_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, SCHEDULE.replace(*change))
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout
    assert message in done.stderr and "[[schedules]] #1 ('nightly')" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_example_schedules_file_loads_and_passes_config_check(tmp_path: Path) -> None:
    config = load_config(ROOT / "config" / "schedules.toml", env={})
    assert [s.name for s in config.schedules] == ["nightly-report", "refresh-feed"]
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(ROOT / "config" / "schedules.toml"),
         "config", "check"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
