"""One function decides how a caller without the ``protected`` scope sees person ids.

Persons with a protected address (fortrolig / strengt fortrolig), recipients or
children, appear on every outward surface (the status API, webhooks, the webhook
outbox listing, exports) only by a stable opaque pseudonym: ``protected-`` + 16 hex
digits of an HMAC under the gateway secret, per tenant. The pseudonym is the same
in every field, every call and every surface, so a status and the webhooks still
add up, but it cannot be turned back into the id. A tenant with the ``protected``
scope sees real ids everywhere.

Every surface calls :func:`names_for` (which asks the store once) and then maps ids
with the :class:`Names` it returns (:meth:`Names.target` a delivery's target: a
protected recipient's push device is hidden too); :func:`pseudonymise_data` maps the
person fields
of a webhook event's ``data``, and :func:`hides_subject` says when a message's
subject must be hidden too (the status API and the staff pages ask it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Iterable
from typing import Any, Protocol

from gateway.constants import ABSENCE_MESSAGE_TYPES, SCOPE_PROTECTED, SUPPRESSED_CHANNEL
from gateway.models import Category, Delivery, Message
from gateway.store.ports import AudienceReader, TenantStore

PSEUDONYM_PREFIX = "protected-"
_PSEUDONYM_LABEL = b"budbringer/status-pseudonym/v1"
# Fields of webhook event data that hold one person id, and those that hold a list.
PERSON_FIELDS = frozenset({"recipient_id", "subject_id", "person_id", "child_id", "guardian_id"})
PERSON_LIST_FIELDS = frozenset({"child_ids", "recipient_ids"})


class Names:
    """How a caller sees person ids: as they are, or protected ones as pseudonyms."""

    def __init__(self, secret: bytes, tenant_id: str, protected: Collection[str]) -> None:
        self._key = hmac.new(secret, _PSEUDONYM_LABEL, hashlib.sha256).digest()
        self._tenant_id = tenant_id
        self._protected = protected

    @property
    def hides_any(self) -> bool:
        return bool(self._protected)

    def hides(self, person_id: str) -> bool:
        """Whether ``person_id`` appears only by its pseudonym (no name, class, number)."""
        return person_id in self._protected

    def __call__(self, person_id: str) -> str:
        if person_id not in self._protected:
            return person_id
        return self._pseudonym(person_id)

    def _pseudonym(self, value: str) -> str:
        data = f"{self._tenant_id}\x1f{value}".encode()
        return PSEUDONYM_PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:16]

    def target(self, delivery: Delivery) -> str | None:
        """A delivery's target as the caller sees it: a suppression record's (the child it
        was about) through the names; a hidden recipient's push device by a pseudonym of
        its own, since the parent app chooses device ids and one may say whose it is."""
        target = delivery.target
        if not target:
            return target
        if delivery.channel == SUPPRESSED_CHANNEL:
            return self(target)
        if self.hides(delivery.recipient_id):
            return self._pseudonym(f"device\x1f{delivery.recipient_id}\x1f{target}")
        return target

    def all(self, person_ids: list[str]) -> list[str]:
        return [self(p) for p in person_ids]


class NamesStore(AudienceReader, TenantStore, Protocol):
    """Who is protected and whether the tenant may see them."""


async def names_for(
    store: NamesStore,
    secret: bytes,
    tenant_id: str,
    person_ids: Iterable[str],
    *,
    sees_protected: bool | None = None,
) -> Names:
    """The names a caller sees for these persons: real ids with the ``protected`` scope,
    else pseudonyms for the protected ones among them. The one decision for every
    surface. ``sees_protected`` is the caller's own right (the API key's scope); None
    means the tenant's setting, for surfaces no key reads (webhooks, staff pages). An
    empty ``secret`` (a test rig without one) gets a random key: the pseudonyms then
    differ between surfaces but can never be reversed."""
    protected: set[str] = set()
    wanted = sorted({p for p in person_ids if p})
    if sees_protected is None and wanted:
        sees_protected = SCOPE_PROTECTED in await store.get_tenant_scopes(tenant_id)
    if wanted and not sees_protected:
        protected = await store.protected_persons(tenant_id, wanted)
    return Names(secret or secrets.token_bytes(32), tenant_id, protected)


def hides_subject(message: Message, name: Names) -> bool:
    """Whether ``message``'s subject must be hidden from a caller seeing ``name``: an
    absence message's subject names the child, so it is hidden whenever a protected
    person it involves is hidden."""
    absence = message.category is Category.absence or message.event_type in ABSENCE_MESSAGE_TYPES
    return name.hides_any and absence


def person_ids_in(data: dict[str, Any]) -> set[str]:
    """The person ids a webhook event's ``data`` names."""
    found = {v for k, v in data.items() if k in PERSON_FIELDS and isinstance(v, str)}
    for key in PERSON_LIST_FIELDS & data.keys():
        found.update(v for v in data[key] or () if isinstance(v, str))
    return found


def pseudonymise_data(data: dict[str, Any], name: Names) -> dict[str, Any]:
    """``data`` with every person field mapped through ``name``."""
    out = dict(data)
    for key, value in data.items():
        if key in PERSON_FIELDS and isinstance(value, str):
            out[key] = name(value)
        elif key in PERSON_LIST_FIELDS and isinstance(value, list):
            out[key] = [name(v) if isinstance(v, str) else v for v in value]
    return out
