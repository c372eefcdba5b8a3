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
import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from gateway.clock import Clock
from gateway.constants import DEFAULT_LANGUAGE, JOB_TRANSLATE_EXPLANATION, JOB_TRANSLATE_REPLY
from gateway.errors import TranslationError
from gateway.jobs import JobHandler
from gateway.message_cache import MessageCache
from gateway.models import (
    AbsenceExplanation,
    Audience,
    DirectorySnapshot,
    Job,
    Message,
    OwnTranslation,
    Reply,
    Translation,
    TranslationOrigin,
)
from gateway.planner import choose_language
from gateway.store import Store
from gateway.store.ports import Translations as TranslationsPort
from gateway.translate_guard import guard, restore
from gateway.translators import Translator

log = logging.getLogger(__name__)

NO_PROVIDER = "no_provider"
REPLY_PREFIX = "reply:"  # translations of a reply are stored under "reply:<reply id>"


EXPLANATION_PREFIX = "explanation:"  # and of an absence explanation "explanation:<id>"


def reply_key(reply_id: str) -> str:
    return REPLY_PREFIX + reply_id


def explanation_key(explanation_id: str) -> str:
    return EXPLANATION_PREFIX + explanation_id


def explanation_job(explanation: AbsenceExplanation, at: datetime) -> Job | None:
    """The job that translates a guardian's absence explanation for staff."""
    if not explanation.text.strip():
        return None
    return Job(
        id=f"{JOB_TRANSLATE_EXPLANATION}:{explanation.id}",
        tenant_id=explanation.tenant_id,
        kind=JOB_TRANSLATE_EXPLANATION,
        ref=f"{explanation.message_id}:{explanation.id}",
        due_at=at,
        urgent=True,  # absence work: staff act on it today
    )


def reply_job(reply: Reply, at: datetime) -> Job | None:
    """The job that translates a guardian's reply for staff (None: no message to go by)."""
    if reply.message_id is None or reply.person_id is None:
        return None
    return Job(
        id=f"{JOB_TRANSLATE_REPLY}:{reply.id}",
        tenant_id=reply.tenant_id,
        kind=JOB_TRANSLATE_REPLY,
        ref=f"{reply.message_id}:{reply.id}",
        due_at=at,
    )


@functools.lru_cache(maxsize=256)  # a few tags, asked once per send
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


async def _staff_translations(
    store: TranslationsPort, tenant_id: str, ids: Iterable[str], key: Callable[[str], str]
) -> dict[str, Translation]:
    """id -> its translation for staff (stored under ``key(id)``), for those that have one."""
    found = {}
    for one in ids:
        for row in (await store.translations.of_message(tenant_id, key(one))).values():
            found[one] = row
    return found


async def reply_translations(
    store: TranslationsPort, tenant_id: str, reply_ids: Iterable[str]
) -> dict[str, Translation]:
    """reply id -> its translation for staff, for the replies that have one."""
    return await _staff_translations(store, tenant_id, reply_ids, reply_key)


async def explanation_translations(
    store: TranslationsPort, tenant_id: str, explanation_ids: Iterable[str]
) -> dict[str, Translation]:
    """explanation id -> its translation for staff, for those that have one."""
    return await _staff_translations(store, tenant_id, explanation_ids, explanation_key)


def source_language(rows: dict[str, Translation]) -> str:
    for row in rows.values():
        if row.origin is TranslationOrigin.source:
            return row.language
    return DEFAULT_LANGUAGE


def _for_language(rows: dict[str, Translation], language: str) -> tuple[str, Translation | None]:
    source = source_language(rows)
    wanted = primary(language)
    if wanted == source:
        return source, None
    row = rows.get(wanted)
    return source, row if row is not None and row.usable else None


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
        # Read once per message however many of its sends start at once.
        self._cache: MessageCache[dict[str, Translation]] = MessageCache()

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
        self._cache.forget(message.id)

    def handlers(self) -> dict[str, JobHandler]:
        """Translation's job: a guardian's reply, for staff."""
        return {
            JOB_TRANSLATE_REPLY: self.run_reply_job,
            JOB_TRANSLATE_EXPLANATION: self.run_explanation_job,
        }

    async def run_explanation_job(self, job: Job) -> None:
        """Translate an absence explanation into the alert's language (nb) for staff."""
        message_id, _, explanation_id = job.ref.partition(":")
        message = await self.store.get_message(job.tenant_id, message_id)
        found = await self.store.list_absence_explanations(job.tenant_id, message_id)
        explanation = next((e for e in found if e.id == explanation_id), None)
        if message is not None and explanation is not None:
            await self._translate_answer(
                message, explanation.person_id, explanation.text, explanation_key(explanation.id)
            )
        await self.store.finish_job(job.id)

    async def run_reply_job(self, job: Job) -> None:
        """Translate a guardian's reply into the message's language for staff (once; the
        original is kept as it is). The guardian's language is the one they were sent."""
        message_id, _, reply_id = job.ref.partition(":")
        message = await self.store.get_message(job.tenant_id, message_id)
        replies = await self.store.list_replies(job.tenant_id, message_id) if message else []
        reply = next((r for r in replies if r.id == reply_id), None)
        if message is not None and reply is not None and reply.person_id is not None:
            await self._translate_answer(message, reply.person_id, reply.body, reply_key(reply.id))
        await self.store.finish_job(job.id)

    async def _translate_answer(
        self, message: Message, person_id: str, text: str, key: str
    ) -> None:
        """A guardian's text about ``message`` in the message's language, stored under
        ``key`` (the original stays where it is)."""
        theirs = await self.store.recipient_deliveries(message.tenant_id, message.id, person_id)
        if not theirs:
            return
        rows = await self.of_message(message)
        target = source_language(rows)
        source = primary(theirs[0].language)
        if source == target or not text.strip():
            return
        # The names of the guardian's family (and the sender's), as for the message itself.
        audience = Audience.model_construct(
            children=sorted({c for d in theirs for c in d.child_ids}),
            groups=[],
            units=[],
            guardians=[person_id],
            staff=[],
        )
        snapshot = await self.store.load_audience(message.tenant_id, audience)
        names = list(_names(snapshot, message))
        for delivery in theirs:
            names.extend(n for n in delivery.context.get("children") or () if isinstance(n, str))
        row = await self._translate(message, source, target, names, texts=("", text), key=key)
        await self.store.translations.add([row])

    async def _translate(
        self,
        message: Message,
        source: str,
        target: str,
        names: Sequence[str],
        *,
        texts: tuple[str, str] | None = None,
        key: str | None = None,
    ) -> Translation:
        row = Translation(
            tenant_id=message.tenant_id,
            message_id=key or message.id,
            language=target,
            origin=TranslationOrigin.failed,
            at=self.clock.now(),
        )
        if self.translator is None:
            return row.model_copy(update={"reason": NO_PROVIDER})
        provider = self.translator.name
        if not self.translator.supports(source, target):
            return row.model_copy(update={"provider": provider, "reason": "unsupported_language"})
        subject_in, body_in = texts or (message.subject, message.body)
        # One batch: subject and body (a reply has only a body).
        guarded = [guard(text, names) for text in (subject_in, body_in) if text]
        try:
            out = await self.translator.translate([t.markup for t in guarded], source, target)
            done = [restore(m, t.spans) for m, t in zip(out, guarded, strict=True)]
            subject, body = done if len(done) == 2 else ("", done[0])
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
            read = self.store.translations.of_message
            rows = await self._cache.load(message.id, lambda: read(message.tenant_id, message.id))
        return rows or {}

    async def for_language(self, message: Message, language: str) -> tuple[str, Translation | None]:
        """(the message's language, the translation a reader of ``language`` gets or None:
        the original)."""
        return _for_language(await self.of_message(message), language)

    def known_for_language(
        self, message: Message, language: str
    ) -> tuple[str, Translation | None] | None:
        """:meth:`for_language`'s answer when the message's rows were read before (every
        send but a message's first ones), without a coroutine; None: call that."""
        rows = self._cache.get(message.id)
        return None if rows is None else _for_language(rows, language)

    async def aclose(self) -> None:
        if self.translator is not None:
            await self.translator.aclose()
