"""The texts of the staff and parent pages: the same keys, nested, in nb, nn and en, and
every problem page in Bokmål and English; and the one rule of why a child was not
reached (gateway/notreached.py), which the staff pages put in plain words."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.constants import SUPPRESSED_CHANNEL
from gateway.models import Audience, Category, Delivery, DeliveryStatus, Message, ReadRecord, Role
from gateway.notreached import (
    ALL_FAILED,
    ALL_SUPPRESSED,
    ESCALATED,
    NOT_READ,
    QUIET_HOURS,
    why_not_reached,
)
from gateway.tracker import ESCALATION_KEY, reach

PAGES = Path(__file__).resolve().parents[1] / "templates" / "pages"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def _keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for key, value in table.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= _keys(value, f"{prefix}{key}.")
    return found


def test_every_staff_language_has_every_text() -> None:
    texts = tomllib.loads((PAGES / "staff.toml").read_text(encoding="utf-8"))
    keys = _keys(texts["nb"])
    for language in ("nn", "en"):
        assert _keys(texts[language]) == keys, language


@pytest.mark.parametrize("name", ["staff.toml", "parent.toml", "unsubscribe.toml", "texts.toml"])
def test_problem_pages_are_bilingual(name: str) -> None:
    """Per-language page texts are in templates/locale (tests/test_locales.py); what is
    left in the TOML files are the pages shown before the language is known."""
    texts = tomllib.loads((PAGES / name).read_text(encoding="utf-8"))
    for kind, problem in texts.get("problems", {}).items():
        assert set(problem) == {"nb_title", "nb_text", "en_title", "en_text"}, kind


def test_every_reason_and_status_has_plain_words() -> None:
    texts = tomllib.loads((PAGES / "staff.toml").read_text(encoding="utf-8"))
    for language in ("nb", "nn", "en"):
        t = texts[language]
        assert set(t["why"]) == {ALL_SUPPRESSED, ALL_FAILED, QUIET_HOURS, ESCALATED, NOT_READ}
        assert set(t["statuses"]) == {s.value for s in DeliveryStatus}
        assert set(t["categories"]) == {c.value for c in Category}


def _message() -> Message:
    return Message(
        id="m1",
        tenant_id="t",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="S",
        body="B",
        audience=Audience(groups=["g1"]),
        created_at=T0,
    )


def _d(
    recipient: str,
    channel: str,
    child: str,
    status: DeliveryStatus,
    *,
    not_before: datetime | None = None,
    escalated: bool = False,
    target: str = "",
) -> Delivery:
    return Delivery(
        id=f"{recipient}-{channel}-{child}",
        tenant_id="t",
        message_id="m1",
        recipient_id=recipient,
        recipient_role=Role.guardian,
        channel=channel,
        target=target,
        language="nb",
        child_ids=[child],
        context={ESCALATION_KEY: 1} if escalated else {},
        status=status,
        not_before=not_before,
        created_at=T0 + timedelta(hours=2 if escalated else 0),
        updated_at=T0,
    )


def test_why_a_child_was_not_reached() -> None:
    later = T0 + timedelta(hours=10)
    deliveries = [
        _d("p1", SUPPRESSED_CHANNEL, "c1", DeliveryStatus.suppressed, target="c1"),
        _d("p2", "inapp", "c2", DeliveryStatus.delivered),
        _d("p2", "email", "c2", DeliveryStatus.bounced),
        _d("p3", "inapp", "c3", DeliveryStatus.delivered),
        _d("p3", "sms", "c3", DeliveryStatus.planned, not_before=later),
        _d("p4", "inapp", "c4", DeliveryStatus.delivered),
        _d("p4", "sms", "c4", DeliveryStatus.sent, escalated=True),
        _d("p5", "inapp", "c5", DeliveryStatus.delivered),
        _d("p5", "email", "c5", DeliveryStatus.sent),
        _d("p6", "inapp", "c6", DeliveryStatus.read),
    ]
    reads = [ReadRecord(person_id="p6", at=T0, via="inapp")]
    why = why_not_reached(reach(_message(), deliveries, reads), deliveries, T0 + timedelta(hours=3))
    assert {c: w.code for c, w in why.items()} == {
        "c1": ALL_SUPPRESSED,
        "c2": ALL_FAILED,
        "c3": QUIET_HOURS,
        "c4": ESCALATED,
        "c5": NOT_READ,
    }
    assert why["c3"].at == later
    assert why["c4"].channel == "sms" and why["c4"].at == T0 + timedelta(hours=2)
