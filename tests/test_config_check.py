"""A wrong configuration is impossible to miss: production refuses to start without real
providers and an https PUBLIC_URL; unknown variables and keys are named with a suggestion."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.service import Service
from gateway.settings import Settings, load_settings
from tests.peers.fcm import write_service_account

SECRET = "a-production-secret-that-is-long-enough-0123456789"


def production(tmp_path: Path, **update: object) -> Settings:
    """A complete production configuration (providers need not answer to be configured)."""
    account = write_service_account(tmp_path / "sa.json", "http://127.0.0.1:9/token")
    values: dict[str, object] = {
        "environment": "production",
        "secret_key": SECRET,
        "store_url": f"sqlite:///{tmp_path / 'bb.db'}",
        "outbox_dir": tmp_path / "outbox",
        "public_url": "https://varsel.asker.kommune.no",
        "smtp": {"host": "127.0.0.1", "port": 9, "sender": "Asker <varsel@asker.kommune.no>"},
        "twilio": {
            "account_sid": "AC" + "0" * 32,
            "auth_token": "t" * 32,
            "default_sender": "Asker",
        },
        "fcm": {"service_account_file": account},
    }
    values.update(update)
    return Settings(**values)  # type: ignore[arg-type]


def refusal(settings: Settings) -> str:
    with pytest.raises(ConfigError) as info:
        Service(settings)
    text = str(info.value)
    assert text.startswith("refusing to start in production: ")
    return text


def test_a_complete_production_configuration_starts(tmp_path: Path) -> None:
    service = Service(production(tmp_path))
    assert set(service.channels) == {"inapp", "email", "sms", "push"}


@pytest.mark.parametrize(
    ("missing", "channel", "names"),
    [
        ("smtp", "email", "BUDBRINGER_SMTP__HOST"),
        ("twilio", "sms", "BUDBRINGER_TWILIO__AUTH_TOKEN"),
        ("fcm", "push", "BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE"),
    ],
)
def test_production_refuses_a_channel_without_its_provider(
    tmp_path: Path, missing: str, channel: str, names: str
) -> None:
    text = refusal(production(tmp_path, **{missing: None}))
    assert f"the {channel} channel has no provider" in text
    assert names in text and "BUDBRINGER_OUTBOX_IN_PRODUCTION=true" in text
    # Exactly this one problem: the others are configured.
    assert text.count("has no provider") == 1 and "PUBLIC_URL" not in text


def test_production_with_nothing_configured_names_every_missing_piece(tmp_path: Path) -> None:
    settings = Settings(
        environment="production", secret_key=SECRET, store_url=f"sqlite:///{tmp_path / 'b.db'}"
    )
    text = refusal(settings)
    for channel in ("email", "sms", "push"):
        assert f"the {channel} channel has no provider" in text
    assert "BUDBRINGER_PUBLIC_URL must be the https:// address" in text


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://varsel.asker.kommune.no"])
def test_production_refuses_a_public_url_that_is_not_https(tmp_path: Path, url: str) -> None:
    text = refusal(production(tmp_path, public_url=url))
    assert "BUDBRINGER_PUBLIC_URL must be the https:// address" in text
    assert "has no provider" not in text


@pytest.mark.parametrize(
    "url", ["https://localhost:8080", "https://127.0.0.1", "https://[::1]/", "https://0.0.0.0"]
)
def test_production_refuses_a_public_url_on_this_machine(tmp_path: Path, url: str) -> None:
    text = refusal(production(tmp_path, public_url=url))
    assert "BUDBRINGER_PUBLIC_URL points to this machine (localhost)" in text


@pytest.mark.parametrize(
    "url",
    [
        "varsel.no",
        "https://",
        "https://varsel kommune.no",
        "https://v.no/?x=1",
        "https://v.no?",
        "https://v.no/#",
        "https://user:pw@v.no",
        "ftp://v.no",
    ],
)
def test_a_public_url_no_phone_can_open_is_refused_in_every_environment(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(store_url=f"sqlite:///{tmp_path / 'b.db'}", public_url=url)
    [error] = info.value.errors()
    assert error["loc"] == ("public_url",)
    assert "https://varsel.asker.kommune.no" in error["msg"]


def test_a_public_url_with_a_path_is_fine_and_its_scheme_and_host_are_lower_case(
    tmp_path: Path,
) -> None:
    url = "https://www.asker.kommune.no/varsel/"
    assert production(tmp_path, public_url=url).public_url == url
    loud = "HTTPS://Varsel.Asker.Kommune.NO:8443/Varsel"
    assert production(tmp_path, public_url=loud).public_url == (
        "https://varsel.asker.kommune.no:8443/Varsel"
    )


def test_a_channel_left_out_needs_no_provider(tmp_path: Path) -> None:
    service = Service(production(tmp_path, twilio=None, channels=["inapp", "push", "email"]))
    assert "sms" not in service.channels


def test_outbox_in_production_starts_with_a_warning_every_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = production(tmp_path, smtp=None, twilio=None, fcm=None, outbox_in_production=True)
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            Service(settings)
        [record] = [r for r in caplog.records if "outbox_in_production" in r.getMessage()]
        assert record.levelno == logging.WARNING


def test_development_keeps_zero_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    service = Service(load_settings())
    assert service.settings.environment == "development"
    assert type(service.channels["email"]).__name__ == "OutboxChannel"


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("BUDBRINGER_SMTP_HOST", "BUDBRINGER_SMTP__HOST"),
        ("BUDBRINGER_PUBLICURL", "BUDBRINGER_PUBLIC_URL"),
        ("BUDBRINGER_DISPATCH__CONCURENCY", "BUDBRINGER_DISPATCH__CONCURRENCY"),
        ("BUDBRINGER_OUTBOX_IN_PRODUKTION", "BUDBRINGER_OUTBOX_IN_PRODUCTION"),
    ],
)
def test_an_unknown_variable_is_refused_with_the_closest_known_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, suggestion: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == f"unknown variable {variable} (did you mean {suggestion}?)"


def test_known_nested_variables_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BUDBRINGER_ESCALATION__AFTER_MINUTES__EMERGENCY", "5")
    monkeypatch.setenv("BUDBRINGER_WEBHOOKS__RETRY_SCHEDULE", "[1, 2]")
    monkeypatch.setenv("BUDBRINGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # the suite's
    settings = load_settings()
    assert settings.escalation.after_minutes.emergency == 5


def test_an_unknown_toml_key_is_refused_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bb.toml"
    config.write_text('public_ur = "https://x"\n[smtp]\nhots = "relay"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value) == (
        "unknown key public_ur (did you mean public_url?); unknown key smtp.hots"
        " (did you mean host?)"
    )


def test_broken_toml_is_one_line_naming_the_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bb.toml"
    config.write_text('port = 8080\n[smtp\nhost = "relay"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert text.startswith(f"{config} is not valid TOML: ") and "line 2" in text
    assert "\n" not in text
    # The refused file is not left behind for the next settings of this process.
    assert Settings().port == 8080


SMTP = {"host": "127.0.0.1", "port": 9, "sender": "Asker <varsel@asker.kommune.no>"}


def test_email_in_flight_follows_a_smaller_smtp_pool() -> None:
    # Microsoft 365's 3 connections: a fourth email in flight would only hold a slot
    assert Settings(smtp={**SMTP, "connections": 3}).dispatch.in_flight_limit("email") == 3
    assert Settings(smtp=SMTP).dispatch.in_flight_limit("email") == 32
    pool = Settings(smtp={**SMTP, "connections": 3}, dispatch={"channel_concurrency": {"sms": 5}})
    assert pool.dispatch.in_flight_limit("email") == 3
    assert pool.dispatch.in_flight_limit("sms") == 5


def test_an_email_limit_above_the_smtp_pool_is_refused() -> None:
    with pytest.raises(ValueError, match=r"channel_concurrency\.email \(10\) is more than"):
        Settings(smtp={**SMTP, "connections": 3}, dispatch={"channel_concurrency": {"email": 10}})


FCM = {"service_account_file": "/etc/budbringer/fcm.json"}


def test_push_in_flight_follows_a_smaller_fcm_pool_and_a_larger_limit_is_refused() -> None:
    assert Settings(fcm={**FCM, "connections": 16}).dispatch.in_flight_limit("push") == 16
    assert Settings(fcm=FCM).dispatch.in_flight_limit("push") == 64
    with pytest.raises(ValueError, match=r"channel_concurrency\.push \(100\) is more than"):
        Settings(fcm={**FCM, "connections": 64}, dispatch={"channel_concurrency": {"push": 100}})


def test_a_provider_timeout_over_half_the_lease_is_refused() -> None:
    # A send starts with half its lease left at least; one that may take longer than that
    # could be taken over by another worker mid-send and sent twice.
    assert Settings(smtp=SMTP).smtp is not None  # the defaults fit: 30 s of a 60 s lease
    with pytest.raises(ValueError, match=r"smtp\.timeout \(30 s\) is more than half of"):
        Settings(smtp=SMTP, dispatch={"lease_seconds": 40})
    with pytest.raises(ValueError, match=r"twilio\.timeout \(25 s\) is more than half of"):
        Settings(
            twilio={"account_sid": "AC" + "0" * 32, "auth_token": "x", "timeout": 25},
            dispatch={"lease_seconds": 40},
        )
    with pytest.raises(ValueError, match=r"fcm\.timeout \(10 s\) is more than half of"):
        Settings(fcm=FCM, dispatch={"lease_seconds": 15})
    assert Settings(smtp={**SMTP, "timeout": 5}, dispatch={"lease_seconds": 10}).smtp
