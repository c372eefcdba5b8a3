"""Translation of staff text, once per (message, language).

When a message is planned, every language its recipients read that differs from the
message's own gets a row in the translation store (gateway/store/translations.py):
the teacher's own translation if the event carried one (stored at intake), else one
batch call to the provider (subject and body together), else a ``failed`` row that
says why (no provider, provider down, language unsupported). Every send and every
escalation then reads that row: nothing is translated twice, and a provider outage
delays nothing — the original goes out and the status shows the reason.

Names of the audience and dates are protected (gateway/translate_guard.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from gateway.clock import Clock
from gateway.constants import DEFAULT_LANGUAGE
from gateway.errors import TranslationError
from gateway.models import (
    DirectorySnapshot,
    Message,
    OwnTranslation,
    Translation,
    TranslationOrigin,
)
from gateway.planner import choose_language
from gateway.store import Store
from gateway.translate_guard import guard, restore
from gateway.translators import Translator

log = logging.getLogger(__name__)

NO_PROVIDER = "no_provider"


def primary(tag: str | None) -> str:
    """The primary language subtag: "nb-NO" -> "nb", "no"/"nob" -> "nb"."""
    if not tag:
        return DEFAULT_LANGUAGE
    first = re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]
    return {"no": "nb", "nob": "nb", "nno": "nn"}.get(first, first)


def intake_rows(
    message: Message, language: str, own: dict[str, OwnTranslation]
) -> list[Translation]:
    """The rows an accepted message.created brings: its language, the teacher's own."""
    rows = [
        Translation(
            tenant_id=message.tenant_id,
            message_id=message.id,
            language=language,
            origin=TranslationOrigin.source,
            at=message.created_at,
        )
    ]
    for lang, text in sorted(own.items()):
        if lang != language:
            rows.append(
                Translation(
                    tenant_id=message.tenant_id,
                    message_id=message.id,
                    language=lang,
                    origin=TranslationOrigin.teacher,
                    subject=text.subject,
                    body=text.body,
                    at=message.created_at,
                )
            )
    return rows


def source_language(rows: dict[str, Translation]) -> str:
    for row in rows.values():
        if row.origin is TranslationOrigin.source:
            return row.language
    return DEFAULT_LANGUAGE


def _names(snapshot: DirectorySnapshot, message: Message) -> Iterable[str]:
    for person in snapshot.persons.values():
        yield person.given_name
        yield from person.given_name.split()
        if person.family_name:
            yield person.family_name
    if message.sender_name:
        yield message.sender_name
        yield from message.sender_name.split()


class Translations:
    """Makes and finds translations. ``translator`` None: translation is off."""

    def __init__(self, store: Store, translator: Translator | None, clock: Clock) -> None:
        self.store = store
        self.translator = translator
        self.clock = clock
        # message id -> its rows; rows never change once stored (the first one stays).
        self._cache: OrderedDict[str, dict[str, Translation]] = OrderedDict()

    async def prepare(
        self, message: Message, snapshot: DirectorySnapshot, recipients: Iterable[str]
    ) -> None:
        """Translate ``message`` into every language of its ``recipients`` it lacks."""
        languages = {
            primary(choose_language(snapshot.persons[pid], snapshot.preferences.get(pid)))
            for pid in recipients
            if pid in snapshot.persons
        }
        stored = await self.store.translations.of_message(message.tenant_id, message.id)
        source = source_language(stored)
        missing = sorted(languages - set(stored) - {source})
        if not missing:
            return
        names = tuple(_names(snapshot, message))
        rows = await asyncio.gather(
            *(self._translate(message, source, lang, names) for lang in missing)
        )
        await self.store.translations.add(rows)
        self._cache.pop(message.id, None)

    async def _translate(
        self, message: Message, source: str, target: str, names: Sequence[str]
    ) -> Translation:
        row = Translation(
            tenant_id=message.tenant_id,
            message_id=message.id,
            language=target,
            origin=TranslationOrigin.failed,
            at=self.clock.now(),
        )
        if self.translator is None:
            return row.model_copy(update={"reason": NO_PROVIDER})
        provider = self.translator.name
        if not self.translator.supports(source, target):
            return row.model_copy(update={"provider": provider, "reason": "unsupported_language"})
        texts = [guard(message.subject, names), guard(message.body, names)]
        try:
            out = await self.translator.translate([t.markup for t in texts], source, target)
            subject, body = (restore(m, t.spans) for m, t in zip(out, texts, strict=True))
        except TranslationError as exc:
            # The provider's reason only: never the text.
            log.warning(
                "translation failed, the original goes out",
                extra={"provider": provider, "language": target, "code": exc.code},
            )
            return row.model_copy(update={"provider": provider, "reason": exc.code})
        return row.model_copy(
            update={
                "origin": TranslationOrigin.machine,
                "provider": provider,
                "subject": " ".join(subject.split()),
                "body": body,
            }
        )

    async def of_message(self, message: Message) -> dict[str, Translation]:
        rows = self._cache.get(message.id)
        if rows is None:
            rows = await self.store.translations.of_message(message.tenant_id, message.id)
            self._cache[message.id] = rows
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return rows

    async def for_language(self, message: Message, language: str) -> tuple[str, Translation | None]:
        """(the message's language, the translation a reader of ``language`` gets or None:
        the original)."""
        rows = await self.of_message(message)
        source = source_language(rows)
        wanted = primary(language)
        if wanted == source:
            return source, None
        row = rows.get(wanted)
        return source, row if row is not None and row.usable else None

    async def aclose(self) -> None:
        if self.translator is not None:
            await self.translator.aclose()
