"""Render a message for one delivery: its channel, its language, its recipient's context.

The staff member's subject and body are used as written (never translated); our
own wrapper texts (header, "concerns" line, footer) come from
``templates/texts.toml`` in nb, nn or en, and the channel templates in
``templates/<channel>/<template>.<part>`` lay them out. See templates/README.md.

Only the delivery's own context is rendered (its children's first names, its unit,
its sender): nothing about other recipients ever reaches a template.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from babel.lists import format_list
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)

from gateway.attachments import human_size, travels_in_email
from gateway.constants import (
    ABSENCE_CONTEXT_KEY,
    ABSENCE_MESSAGE_TYPES,
    DEFAULT_LANGUAGE,
    NEUTRAL_KEY,
    SUPPORTED_LANGUAGES,
)
from gateway.errors import ConfigError
from gateway.models import Attachment, Category, Delivery, Message, Rendered, Role
from gateway.readlinks import PARENT_PATH, READ_PATH, UNSUBSCRIBE_PATH
from gateway.sms_budget import is_reminder, sms_answerable

PUSH_BODY_MAX = 178
ELLIPSIS = "…"

# The parts each channel renders, besides the subject.
_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("txt", "html"),
    "inapp": ("txt",),
    "sms": ("txt", "short.txt"),
    "push": ("txt", "short.txt"),
}
# Channels whose content carries the recipient's personal read link (when there is one).
_READ_LINK_CHANNELS = frozenset({"email", "sms"})
# Event type -> template name: a staff-written message, or absence texts of our own.
_ABSENCE_TEMPLATE = "absence"
_TEMPLATES: dict[str, str] = {
    "message.created": "message",
    **dict.fromkeys(ABSENCE_MESSAGE_TYPES, _ABSENCE_TEMPLATE),
}
_DEFAULT_TEMPLATE = "message"

# Language subtags (ISO 639-1 and -2) that map onto a language we have texts for.
_LANGUAGE_ALIASES = {
    "nb": "nb",
    "nob": "nb",
    "no": "nb",
    "nor": "nb",
    "nn": "nn",
    "nno": "nn",
    "en": "en",
    "eng": "en",
}


def resolve_language(tag: str | None) -> str:
    """The wrapper language for a language tag: nb, nn or en; anything else gives nb.

    "no", "nb-NO", "nb_NO" and "nob" are Bokmål; "nn-NO" and "nno" Nynorsk;
    "en-GB", "en-US" English.
    """
    if not tag:
        return DEFAULT_LANGUAGE
    primary = re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]
    language = _LANGUAGE_ALIASES.get(primary, DEFAULT_LANGUAGE)
    return language if language in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace and cut ``text`` to at most ``limit`` characters on a word
    boundary, ending with "…" when something was cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS) + 1]
    space = cut.rfind(" ")
    # One very long word: cut inside it rather than return almost nothing.
    cut = cut[:space] if space > limit // 2 else cut[: limit - len(ELLIPSIS)]
    return cut.rstrip(" ,.;:-") + ELLIPSIS


def _one_line(text: str) -> str:
    """Subjects become header values and titles: no line breaks, single spaces."""
    return " ".join(text.split())


@functools.lru_cache(maxsize=64)  # a broadcast renders one body thousands of times
def _paragraphs(body: str) -> list[list[str]]:
    """Split staff text into paragraphs of lines, for escaped HTML output."""
    blocks = re.split(r"\n\s*\n", body.replace("\r\n", "\n").strip())
    return [[line.rstrip() for line in block.split("\n")] for block in blocks if block.strip()]


@functools.lru_cache(maxsize=4096)
def _name_list(names: tuple[str, ...], lang: str) -> str:
    """Names as "Ola, Kari og Nora": babel's list formatting, cached (it parses the locale)."""
    return format_list(list(names), locale=lang)


def _context_names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [name.strip() for name in value if isinstance(name, str) and name.strip()]


def _context_text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


class Renderer:
    """Renders deliveries. Build once at startup: templates are compiled once and cached.

    ``link_for`` gives the personal read link (``<public url>/r/<token>``) of an
    email or SMS delivery, or None for none; without it no read link is rendered.
    An email's ``unsubscribe_url`` is ``<public url>/u/<token>`` with the same token.
    """

    def __init__(
        self,
        templates_dir: Path,
        public_url: str,
        *,
        link_for: Callable[[Delivery], str | None] | None = None,
        sms_fallback_sender: str | None = None,
        email_max_bytes: int = 0,
    ) -> None:
        self._public_url = public_url.rstrip("/")
        self._link_for = link_for
        # The SMS channel's sender when a unit has none (gateway/sms_budget.py).
        self._sms_fallback_sender = sms_fallback_sender
        # Attachments up to this size travel in the email; larger ones as links.
        self._email_max_bytes = email_max_bytes
        try:
            with (templates_dir / "texts.toml").open("rb") as file:
                self._texts: dict[str, dict[str, str]] = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("templates/texts.toml is missing or not valid TOML") from exc
        missing = [lang for lang in SUPPORTED_LANGUAGES if lang not in self._texts]
        if missing:
            raise ConfigError(f"templates/texts.toml lacks languages: {', '.join(missing)}")
        self._env = Environment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._cache: dict[str, Template] = {}
        # Compile the templates every delivery uses now, so a broken one fails at startup.
        for channel, parts in _PARTS.items():
            for part in parts:
                self._template(f"{channel}/{_DEFAULT_TEMPLATE}.{part}")

    def _template(self, name: str) -> Template:
        template = self._cache.get(name)
        if template is None:
            try:
                template = self._env.get_template(name)
            except TemplateError as exc:
                raise ConfigError(f"template {name} is missing or broken") from exc
            # A flat dict instead of jinja's ChainMap: every render copies the globals.
            template.globals = dict(template.globals)
            self._cache[name] = template
        return template

    def render(
        self, message: Message, delivery: Delivery, files: Sequence[Attachment] = ()
    ) -> Rendered:
        """Render ``message`` for ``delivery``'s channel and language; ``files`` are its
        attachments (listed, and linked where the delivery has a read link)."""
        channel = delivery.channel
        parts = _PARTS.get(channel)
        if parts is None:
            raise ConfigError(f"no templates for channel {channel!r}")
        lang = resolve_language(delivery.language)
        read_url = self._read_url(delivery)
        variables = self._variables(message, delivery, lang, read_url)
        variables["files"] = self._files(files, channel, read_url)
        template = _TEMPLATES.get(message.event_type, _DEFAULT_TEMPLATE)
        if template == _ABSENCE_TEMPLATE:
            # Our own texts: the subject too is in the recipient's language.
            subject = self._template("subject/absence.txt").render(variables)
            variables["subject"] = _one_line(subject)
        out = {
            part: self._template(f"{channel}/{template}.{part}").render(variables).strip()
            for part in parts
        }
        short = out.get("short.txt")
        if channel == "push" and short is not None:
            short = shorten(short, PUSH_BODY_MAX)
        return Rendered(
            subject=variables["subject"],
            text=out["txt"],
            html=out.get("html"),
            short=short,
            language=lang,
            unsubscribe_url=self._unsubscribe_url(channel, read_url),
        )

    def _variables(
        self, message: Message, delivery: Delivery, lang: str, read_url: str | None
    ) -> dict[str, Any]:
        texts = self._texts[lang]
        context = delivery.context
        children = _context_names(context.get("children"))
        unit = _context_text(context.get("unit"))
        sender = _context_text(context.get("sender"))
        neutral = bool(context.get(NEUTRAL_KEY))
        if sender and unit and sender != unit:
            from_name: str | None = f"{sender}, {unit}"
        else:
            from_name = sender or unit
        absence: dict[str, Any] = context.get(ABSENCE_CONTEXT_KEY) or {}
        if neutral:
            # Rule 4: a protected child or co-guardian; say where from without a name.
            unit, from_name = None, None
            if absence:
                kind = context.get("unit_kind")
                place = texts.get(f"neutral_unit_{kind}", texts["neutral_unit"])
                absence = absence | {"unit": place, "group": None}
        subject = _one_line(message.subject)
        if message.category is Category.emergency:
            subject = f"{texts['important']} {subject}"
        reminder = is_reminder(delivery)
        if reminder:
            subject = f"{texts['reminder_prefix']} {subject}"
        return {
            "lang": lang,
            "category": message.category.value,
            "subject": subject,
            "body": message.body.strip(),
            "paragraphs": _paragraphs(message.body),
            "header": (
                texts["header"].format(sender=from_name)
                if from_name
                else texts["neutral_header"]
                if neutral
                else None
            ),
            "concerns": (
                texts["concerns"].format(children=_name_list(tuple(children), lang))
                if children
                else None
            ),
            # SMS: the children on the sender's line ("Solvang skole (Ola og Kari): ...").
            "children_names": _name_list(tuple(children), lang) if children else None,
            # Staff get a staff footer (why they get it, the staff pages), not the parent one.
            "staff": delivery.recipient_role is Role.staff,
            "staff_reason": (
                texts["staff_reason_unit"].format(unit=unit) if unit else texts["staff_reason"]
            ),
            "staff_pages": texts["staff_pages"],
            "staff_pages_url": f"{self._public_url}/staff/{'absence' if absence else 'messages'}",
            "reason": texts["reason_unit"].format(unit=unit) if unit else texts["reason"],
            "settings": texts["settings"],
            "read_in_app": texts["read_in_app"],
            "preferences_url": self._preferences_url(read_url),
            "app_url": f"{self._public_url}/app",
            "read_link": texts["read_link"],
            "read_url": read_url,
            # A send of an escalation step (not read in time): "Vi har ikke fått svar ...".
            "reminder": texts["not_answered"] if reminder else None,
            # A read receipt is asked: the email says so, with a button to the read page.
            "receipt": texts["receipt_asked"] if message.read_receipt and read_url else None,
            "receipt_button": texts["receipt_button"],
            # SMS: "<sender>: <subject>" on the first line (neutral: "Kommunen").
            "sms_from": from_name or (texts["neutral_sender"] if neutral else None),
            # SMS: whether the sender can receive an answer (not an alphanumeric id).
            "sms_answerable": sms_answerable(delivery, self._sms_fallback_sender),
            # Absence facts (gateway/absence.py) and the texts they are told with.
            "absence": absence,
            "t": texts,
        }

    def render_digest(
        self, items: Sequence[tuple[Message, Delivery]], carrier: Delivery
    ) -> Rendered:
        """One daily digest on ``carrier``'s channel (email, push or SMS) listing ``items``
        (each message with the recipient's held delivery of it on that channel, whose read
        link it carries), in the carrier's language (gateway/digest.py)."""
        channel = carrier.channel
        parts = _PARTS.get(channel)
        if parts is None or not items:
            raise ConfigError(f"no digest for channel {channel!r}")
        lang = resolve_language(carrier.language)
        entries = []
        for message, delivery in items:
            link = self._read_url(delivery)
            one = self._variables(message, delivery, lang, link)
            entries.append(
                {
                    "sender": one["sms_from"],
                    "children_names": one["children_names"],
                    "subject": one["subject"],
                    "read_url": link,
                }
            )
        link = self._read_url(carrier)
        variables = self._variables(items[0][0], carrier, lang, link)
        subject = self._texts[lang]["digest_subject"].format(count=len(items))
        variables.update(items=entries, subject=subject, inbox_url=self._inbox_url(link))
        out = {
            part: self._template(f"{channel}/digest.{part}").render(variables).strip()
            for part in parts
        }
        short = out.get("short.txt")
        if channel == "push" and short is not None:
            short = shorten(short, PUSH_BODY_MAX)
        return Rendered(
            subject=subject,
            text=out["txt"],
            html=out.get("html"),
            short=short,
            language=lang,
            unsubscribe_url=self._unsubscribe_url(channel, link),
        )

    def _inbox_url(self, read_url: str | None) -> str:
        """The guardian's inbox on the parent pages (the read link's token under /p/)."""
        if read_url is None or READ_PATH not in read_url:
            return f"{self._public_url}/app"
        return f"{self._public_url}{PARENT_PATH}{read_url.rpartition(READ_PATH)[2]}"

    def _files(
        self, files: Sequence[Attachment], channel: str, read_url: str | None
    ) -> list[dict[str, Any]]:
        """Each file's name, size, download link (the read link's /files/<id>) and whether
        the email carries it itself."""
        return [
            {
                "name": f.name,
                "size": human_size(f.size),
                "url": f"{read_url}/files/{f.id}" if read_url else None,
                "attached": channel == "email" and travels_in_email(f.size, self._email_max_bytes),
            }
            for f in files
        ]

    def _read_url(self, delivery: Delivery) -> str | None:
        if self._link_for is None or delivery.channel not in _READ_LINK_CHANNELS:
            return None
        return self._link_for(delivery)

    def _preferences_url(self, read_url: str | None) -> str:
        """The personal settings page (the read link's token under /p/, which opens a
        short session; gateway/api/parent_pages.py), or the general page without one."""
        if read_url is None or READ_PATH not in read_url:
            return f"{self._public_url}/preferences"
        token = read_url.rpartition(READ_PATH)[2]
        return f"{self._public_url}{PARENT_PATH}{token}?to=preferences"

    def _unsubscribe_url(self, channel: str, read_url: str | None) -> str | None:
        """The email's one-click unsubscribe link: the read link's token under /u/."""
        if channel != "email" or read_url is None or READ_PATH not in read_url:
            return None
        token = read_url.rpartition(READ_PATH)[2]
        return f"{self._public_url}{UNSUBSCRIBE_PATH}{token}" if token else None
