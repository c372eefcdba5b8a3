"""Render a message for one delivery: its channel, its language, its recipient's context.

The staff member's subject and body are used as written, or as translated for the
recipient's language (gateway/translations.py: a teacher's own or a machine translation,
announced by a one-line notice linking to the original); our own wrapper texts
(header, "concerns" line, footer) come from the ``texts`` entries
of ``templates/locale/<lang>.po`` (gateway/locales.py), and the channel templates in
``templates/<channel>/<template>.<part>`` lay them out. See templates/README.md.

Names, numbers and links filled into our texts are marked with Unicode isolates
(FSI ... PDI): the HTML email turns them into ``<bdi>`` (filter ``bdi``), plain text
in a right-to-left language keeps them, and plain text in any other language drops
them (they would make a Latin SMS UCS-2 for nothing). An SMS whose only non-GSM-7
characters come from our texts (Polish, Lithuanian, Sámi letters) is rendered again
with those texts folded to GSM-7 (channels/gsm.py ``fold``), so it is not billed
as UCS-2 for the wrapper alone.

Only the delivery's own context is rendered (its children's first names, its unit,
its sender): nothing about other recipients ever reaches a template.

A broadcast renders each kind of delivery (message, channel, language, role, unit and
sender...) once, with stand-ins for the read link and the children's names, and puts
each delivery's own in (``_Stencils``): the jinja templates run per kind, not per
delivery, and the result is the same text (tests/test_render_stencils.py). A stencil is
kept cut at its stand-ins and already finished, and a family's names (the concerns line,
escaped for HTML) are worked out once per language for all its guardians and channels,
so a delivery costs a join per part; an SMS kind whose own text is UCS-2
whatever is filled in is not rendered again folded.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from babel import Locale
from babel.lists import format_list
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)
from markupsafe import Markup, escape

from channels.gsm import GSM7_BASIC, GSM7_EXTENSION, encoding, fold
from gateway.attachments import human_size, travels_in_email
from gateway.constants import (
    ABSENCE_CONTEXT_KEY,
    ABSENCE_MESSAGE_TYPES,
    DEFAULT_LANGUAGE,
    NEUTRAL_KEY,
)
from gateway.errors import ConfigError
from gateway.locales import (
    FSI,
    PDI,
    PluralText,
    catalogue_dir,
    direction,
    is_rtl,
    language_name,
    resolve_language,
)
from gateway.locales import load as load_locales
from gateway.models import (
    Attachment,
    Category,
    Delivery,
    Message,
    Rendered,
    Role,
    Translation,
    TranslationOrigin,
)
from gateway.readlinks import PARENT_PATH, READ_PATH, UNSUBSCRIBE_PATH
from gateway.sms_budget import is_reminder, sms_answerable

log = logging.getLogger(__name__)

PUSH_BODY_MAX = 178
ELLIPSIS = "…"

# The parts each channel renders, besides the subject.
_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("txt", "html"),
    "inapp": ("txt",),
    "sms": ("txt", "short.txt"),
    "push": ("txt", "short.txt"),
    "voice": ("txt", "short.txt"),  # what is said; "press 1 to confirm"
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
_URGENT = frozenset({Category.absence, Category.emergency})  # Rendered.urgent
# How an alert shown on a page asks for the answer (templates/absence/phrases.txt, reply)
Reply = Literal["link", "none"]


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


@functools.lru_cache(maxsize=64)
def _locale(lang: str) -> Locale:
    """A parsed locale: babel loads its data once per object, not once per list."""
    return Locale.parse(lang)


@functools.lru_cache(maxsize=256)
def _language(tag: str | None) -> str:
    """:func:`resolve_language`, cached: a broadcast asks for a few tags thousands of times."""
    return resolve_language(tag)


@functools.lru_cache(maxsize=4096)
def _name_list(names: tuple[str, ...], lang: str) -> str:
    """Names as "Ola, Kari og Nora": babel's list formatting, cached."""
    return format_list(list(names), locale=_locale(lang))


def _source_name(language: str, lang: str, norwegian: str) -> str:
    """The name of the staff text's ``language`` in the wrapper language ``lang``
    ("norsk" for any Norwegian, else Babel's: "Polish")."""
    return norwegian if language in ("nb", "nn", "no") else language_name(language, lang)


def _context_names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [name.strip() for name in value if isinstance(name, str) and name.strip()]


def _context_text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _mark(value: str) -> str:
    """A name, number or link filled into our text: isolated (see the module doc). Any
    isolate characters of its own are dropped, so every ``<bdi>`` made of them closes."""
    return f"{FSI}{_unmark(value)}{PDI}"


def _unmark(text: str) -> str:
    return text.replace(FSI, "").replace(PDI, "")


def _folded(text: str | PluralText) -> str | PluralText:
    if isinstance(text, PluralText):
        return PluralText(tuple(map(fold, text.forms)), text.lang)
    return fold(text)


def bdi(value: Any) -> Markup:
    """Jinja filter for HTML: escape (like ``forceescape``), then each isolated
    stretch becomes ``<bdi>``: a name keeps its own direction in any page direction."""
    escaped = str(escape(str(value)))
    return Markup(escaped.replace(FSI, "<bdi>").replace(PDI, "</bdi>"))


# Absence facts that are names, numbers or dates: isolated like the other values.
_MARKED_FACTS = ("child", "unit", "unit_start", "group", "lesson_name", "start", "end", "arrival")
_MARKED_PER_LANGUAGE = ("date", "dates")


def _marked_absence(absence: dict[str, Any], lang: str, sms_fold: bool) -> dict[str, Any]:
    out = dict(absence)
    for key in _MARKED_FACTS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _mark(out[key])
    for key in _MARKED_PER_LANGUAGE:
        per_language = out.get(key)
        if isinstance(per_language, dict):
            text = str(per_language.get(lang) or per_language.get("nb") or "")
            out[key] = {lang: _mark(fold(text) if sms_fold else text)}
    return out


def _children_text(
    children: list[str], texts: Mapping[str, Any], lang: str
) -> tuple[str | None, str | None]:
    """The concerns line ("Gjelder: Ola og Kari") and the names alone, or None twice."""
    if not children:
        return None, None
    # each name isolated: "Kari" and "Magnus" around an Arabic "and"
    concerns = texts["concerns"].format(children=_name_list(tuple(map(_mark, children)), lang))
    return concerns, _name_list(tuple(children), lang)


class _Job(NamedTuple):
    """One render's inputs."""

    message: Message
    delivery: Delivery
    lang: str
    read_url: str | None
    parts: tuple[str, ...]
    files: Sequence[Attachment]
    translation: Translation | None
    source_language: str


# A read link's token that may stand in a stencil: base64url (gateway/readlinks.py), the
# same in HTML, in GSM-7 and folded, so where it stands changes nothing else.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
STENCILS = 2048  # kinds of delivery kept (unit x language x channel x ...); oldest go first

_Parts = tuple[str, dict[str, str], str]  # subject, parts, language of the staff text
RawParts = Callable[..., _Parts]


def _finished(text: str, rtl: bool) -> str:
    """One part as :meth:`Renderer._finish` leaves it: stripped, isolates dropped unless
    the language is written right to left."""
    return text.strip() if rtl else _unmark(text.strip())


class _Stencil(NamedTuple):
    """A kind's render cut at its stand-ins: each part is literal, field, literal, ...,
    literal, a field naming the value a delivery puts in (:data:`_Values`). Where a part's
    first and last literals hold text of their own, stripping cannot reach a filled-in
    value, so they are kept finished (stripped, isolates kept or dropped as
    :meth:`Renderer._finish` does) and a delivery costs one join; else the part is kept
    raw, joined with raw values and finished as a whole."""

    subject: str  # finished
    parts: dict[str, tuple[bool, tuple[str, ...]]]  # part -> (finished?, pieces)
    text_language: str
    rtl: bool
    # Its own text has a character GSM-7 lacks that finishing never drops: every SMS made
    # from it is UCS-2, whatever is filled in.
    ucs2: bool
    # Its own text, finished, is all GSM-7: an SMS made from it is GSM-7 if its values are.
    gsm: bool

    def filled(self, values: Mapping[str, str]) -> _Parts:
        """The parts with this delivery's values filled in."""
        out = {}
        for part, (finished, pieces) in self.parts.items():
            joined = [pieces[0]]
            for at in range(1, len(pieces), 2):
                joined.append(values[pieces[at]])
                joined.append(pieces[at + 1])
            text = "".join(joined)
            out[part] = text if finished else _finished(text, self.rtl)
        return self.subject, out, self.text_language


# A delivery's values, by field: "t" its read link's token (the same on every side), and
# for its children a letter (c: concerns, n: names) and a side: 0 and 1 the HTML and text
# values finished for the language, 2 and 3 as rendered.
_Values = dict[str, str]
_SIDES = range(4)
CHILDREN_FILLS = 4096  # children's names kept per (names, language, folded); oldest go first
_GSM7 = GSM7_BASIC | GSM7_EXTENSION


def _surely_ucs2(literals: str, rtl: bool) -> bool:
    """Whether a text finished from these literals is UCS-2 whatever is filled in: one of
    its characters is not GSM-7, nor white space (stripping may drop that at the ends),
    nor an isolate that finishing drops (only right to left keeps them)."""
    if not rtl:
        literals = _unmark(literals)
    return any(not char.isspace() for char in set(literals) - _GSM7)


def _all_gsm(texts: Iterable[str], rtl: bool) -> bool:
    """Whether these texts, finished (isolates dropped unless right to left), are GSM-7."""
    return all(_GSM7.issuperset(text if rtl else _unmark(text)) for text in texts)


def _sms_parts(channel: str, parts: _Parts, folded: Callable[[], _Parts | None]) -> _Parts:
    """The parts that go: ``parts``, but for an SMS they make UCS-2 the same rendered
    with our texts folded to GSM-7 (``folded()``; None where folding cannot help) when
    those are all GSM-7, since then only our texts' letters (ą, č, á...) made it UCS-2.
    The staff's own text and the names filled in are never folded: an SMS they make
    UCS-2 keeps our letters too."""
    if channel != "sms" or not any(encoding(text) == "UCS-2" for text in parts[1].values()):
        return parts
    other = folded()
    if other is not None and all(encoding(text) == "GSM-7" for text in other[1].values()):
        return other
    return parts


class _Kind(NamedTuple):
    """What a delivery's stencil is found by: its kind, and its children's names."""

    key: tuple[Any, ...]
    children: tuple[str, ...]


class _Stencils:
    """A broadcast renders one text for thousands of deliveries that differ only in their
    read link and their children's names. The first delivery of a kind is rendered with
    stand-ins for those (its stencil); every other delivery of the kind gets the stencil
    with its own link and names filled in, stripped and unmarked like a direct render.

    The kind is everything else a render reads: the message (and translation, files),
    the channel, language and role, and the whole context but the children. A stencil is
    checked against a direct render of its first delivery; if they differ (a template
    that treats the names in a way the fill does not), that kind is rendered directly.
    Absence texts are always rendered directly (one child, few deliveries).

    A stencil is kept finished and cut at its stand-ins, so a delivery costs one join per
    part; the children's values (concerns, names, escaped for HTML) are kept per set
    of names and language, since a family's guardians and channels share them.
    """

    def __init__(
        self,
        raw_parts: RawParts,
        finish: Callable[..., _Parts],
        texts: Callable[[str, bool], Mapping[str, Any]],
    ) -> None:
        self._raw_parts = raw_parts
        self._finish = finish
        self._texts = texts  # (language, folded) -> our texts
        # Random per process: staff text cannot spell a stand-in, so only ours are replaced.
        mark = secrets.token_hex(8)
        self._mark = mark
        self._token, self._concerns, self._names = (f"Bb{k}{mark}" for k in ("t", "c", "n"))
        self._letters = {self._concerns: "c", self._names: "n"}
        self._cut = re.compile(f"({self._token}|{self._concerns}|{self._names})")
        # (kind, folded) -> its stencil, None: render directly
        self._kept: dict[tuple[tuple[Any, ...], bool], _Stencil | None] = {}
        self._children: dict[tuple[tuple[str, ...], str, bool], tuple[_Values, bool] | None] = {}

    def kind_of(self, job: _Job) -> _Kind | None:
        """``job``'s kind, or None: render it directly."""
        children = tuple(_context_names(job.delivery.context.get("children")))
        key = self._key(job, bool(children))
        return None if key is None else _Kind(key, children)

    def parts(self, job: _Job, kind: _Kind, sms_fold: bool) -> tuple[_Parts, bool] | None:
        """The parts for ``job`` from its kind's stencil and whether they are surely all
        GSM-7 (its own text and its values are), or None: render it directly."""
        found = self._values(job, kind.children, sms_fold)
        if found is None:
            return None
        values, gsm = found
        stencil = self._kept.get((kind.key, sms_fold), _UNSEEN)
        if stencil is _UNSEEN:
            stencil = self._make(job, (kind.key, sms_fold), sms_fold, values, kind.children)
        return None if stencil is None else (stencil.filled(values), gsm and stencil.gsm)

    def surely_ucs2(self, kind: _Kind, sms_fold: bool) -> bool:
        """Whether every SMS of this kind is UCS-2 (:attr:`_Stencil.ucs2`), as far as its
        stencil is made: a folded render cannot help such a kind."""
        stencil = self._kept.get((kind.key, sms_fold))
        return stencil is not None and stencil.ucs2

    def _key(self, job: _Job, children: bool) -> tuple[Any, ...] | None:
        message, delivery, translation = job.message, job.delivery, job.translation
        if _TEMPLATES.get(message.event_type, _DEFAULT_TEMPLATE) != _DEFAULT_TEMPLATE:
            return None
        link: str | None = None
        if job.read_url is not None:
            link, found, token = job.read_url.rpartition(READ_PATH)
            if not found or not _TOKEN.fullmatch(token):
                return None
        mark = self._mark
        if mark in message.subject or mark in message.body:
            return None
        translated: tuple[str, ...] = ()
        if translation is not None:
            translated = (translation.subject, translation.body)
            if mark in translation.subject or mark in translation.body:
                return None
        context = delivery.context
        if "children" in context:
            context = dict(context)
            del context["children"]
        return (
            message.tenant_id,
            message.id,
            message.event_type,
            message.category,
            message.read_receipt,
            message.subject,
            message.body,
            translated,
            None if translation is None else (translation.language, translation.origin),
            job.source_language,
            tuple([(f.id, f.name, f.size) for f in job.files]) if job.files else (),
            delivery.channel,
            job.lang,
            delivery.recipient_role,
            link,
            children,
            repr(context),
        )

    def _values(
        self, job: _Job, children: tuple[str, ...], sms_fold: bool
    ) -> tuple[_Values, bool] | None:
        """This delivery's values (:data:`_Values`) and whether they are all GSM-7."""
        values: _Values = {}
        gsm = True
        if children:
            named = self._children_values(children, job.lang, sms_fold)
            if named is None:
                return None
            values, gsm = named
            if job.read_url is None:
                return named
            values = values.copy()
        if job.read_url is not None:
            # base64url (kind_of checked it): nothing to finish, and GSM-7
            token = job.read_url.rpartition(READ_PATH)[2]
            values["t"] = token
        return values, gsm

    def _children_values(
        self, children: tuple[str, ...], lang: str, sms_fold: bool
    ) -> tuple[_Values, bool] | None:
        key = (children, lang, sms_fold)
        if key in self._children:
            return self._children[key]
        concerns, names = _children_text(list(children), self._texts(lang, sms_fold), lang)
        assert concerns is not None and names is not None
        # As the templates show them: "concerns | bdi" in HTML, "children_names | iso".
        raw = {"c": (str(bdi(concerns)), concerns), "n": (str(escape(names)), _unmark(names))}
        found: tuple[_Values, bool] | None = None
        if not any(self._mark in value for pair in raw.values() for value in pair):
            rtl = is_rtl(lang)
            values = {}
            for letter, (html, text) in raw.items():
                finished = (html, text) if rtl else (_unmark(html), _unmark(text))
                for side, value in zip(_SIDES, (*finished, html, text), strict=True):
                    values[f"{letter}{side}"] = value
            found = values, _all_gsm(values.values(), rtl)
        if len(self._children) >= CHILDREN_FILLS:
            del self._children[next(iter(self._children))]
        self._children[key] = found
        return found

    def _make(
        self,
        job: _Job,
        key: tuple[tuple[Any, ...], bool],
        sms_fold: bool,
        values: _Values,
        children: tuple[str, ...],
    ) -> _Stencil | None:
        url = None
        if job.read_url is not None:
            url = job.read_url.rpartition(READ_PATH)[0] + READ_PATH + self._token
        stand_ins = (self._concerns, self._names) if children else None
        raw = self._raw_parts(job, sms_fold=sms_fold, read_url=url, children=stand_ins)
        stencil = self._cut_up(raw, job.lang)
        direct = self._finish(job.lang, *self._raw_parts(job, sms_fold=sms_fold))
        if stencil is None or stencil.filled(values) != direct:
            log.warning(
                "a stencil differs from its direct render; rendering this kind directly",
                extra={"channel": job.delivery.channel, "language": job.lang},
            )
            stencil = None
        if len(self._kept) >= STENCILS:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = stencil
        return stencil

    def _cut_up(self, raw: _Parts, lang: str) -> _Stencil | None:
        """``raw`` cut at its stand-ins, finished where stripping stays in its own text."""
        subject, texts, text_language = raw
        if self._cut.search(subject):
            return None
        rtl = is_rtl(lang)
        parts: dict[str, tuple[bool, tuple[str, ...]]] = {}
        literals: list[str] = []
        for part, text in texts.items():
            pieces: list[str] = self._cut.split(text)
            finished = len(pieces) == 1 or bool(pieces[0].strip() and pieces[-1].strip())
            if len(pieces) == 1:
                pieces[0] = _finished(text, rtl)
            elif finished:
                pieces[0], pieces[-1] = pieces[0].lstrip(), pieces[-1].rstrip()
                if not rtl:
                    pieces[::2] = [_unmark(piece) for piece in pieces[::2]]
            literals.extend(pieces[::2])
            # a fill is (html, text) finished, then (html, text) raw
            side = (0 if part == "html" else 1) + (0 if finished else 2)
            pieces[1::2] = [
                "t" if piece == self._token else f"{self._letters[piece]}{side}"
                for piece in pieces[1::2]
            ]
            parts[part] = (finished, tuple(pieces))
        own = "".join(literals)
        return _Stencil(
            subject if rtl else _unmark(subject),
            parts,
            text_language,
            rtl,
            ucs2=_surely_ucs2(own, rtl),
            gsm=_all_gsm((own,), rtl),
        )


_UNSEEN: Any = object()


class Renderer:
    """Renders deliveries. Build once at startup: templates are compiled once and cached.

    ``link_for`` gives the personal read link (``<public url>/r/<token>``) of an
    email or SMS delivery, or None for none; without it no read link is rendered.
    An email's ``unsubscribe_url`` is ``<public url>/u/<token>`` with the same token.
    ``locale_dir`` holds a municipality's corrections of our texts (gateway/locales.py).
    """

    def __init__(
        self,
        templates_dir: Path,
        public_url: str,
        *,
        link_for: Callable[[Delivery], str | None] | None = None,
        sms_fallback_sender: str | None = None,
        locale_dir: Path | None = None,
        email_max_bytes: int = 0,
    ) -> None:
        self._public_url = public_url.rstrip("/")
        self._link_for = link_for
        # The SMS channel's sender when a unit has none (gateway/sms_budget.py).
        self._sms_fallback_sender = sms_fallback_sender
        # Attachments up to this size travel in the email; larger ones as links.
        self._email_max_bytes = email_max_bytes
        catalogues = load_locales(locale_dir, catalogue_dir(templates_dir))
        self._texts: dict[str, dict[str, Any]] = catalogues["texts"]
        # The same texts folded to GSM-7 where that makes them GSM-7 (SMS only).
        self._folded: dict[str, dict[str, Any]] = {
            lang: {key: _folded(text) for key, text in texts.items()}
            for lang, texts in self._texts.items()
        }
        self._env = Environment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._env.filters["bdi"] = bdi
        self._env.filters["iso"] = _mark
        self._cache: dict[str, Template] = {}
        # Compile the templates every delivery uses now, so a broken one fails at startup.
        for channel, parts in _PARTS.items():
            for part in parts:
                self._template(f"{channel}/{_DEFAULT_TEMPLATE}.{part}")
        self._stencils = _Stencils(
            self._raw_parts,
            self._finish,
            lambda lang, sms_fold: (self._folded if sms_fold else self._texts)[lang],
        )

    def text(self, lang: str, key: str) -> str:
        """One wrapper text (the ``texts`` entries of ``templates/locale/<lang>.po``)."""
        return str(self._texts[lang][key])

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
        self,
        message: Message,
        delivery: Delivery,
        files: Sequence[Attachment] = (),
        *,
        translation: Translation | None = None,
        source_language: str = DEFAULT_LANGUAGE,
    ) -> Rendered:
        """Render ``message`` for ``delivery``'s channel and language; ``files`` are its
        attachments (listed, and linked where the delivery has a read link); with
        ``translation`` its subject and body replace the original's, announced by a notice."""
        channel = delivery.channel
        parts = _PARTS.get(channel)
        if parts is None:
            raise ConfigError(f"no templates for channel {channel!r}")
        lang = _language(delivery.language)
        read_url = self._read_url(delivery)
        job = _Job(message, delivery, lang, read_url, parts, files, translation, source_language)
        subject, out, text_language = self._choose(job)
        short = out.get("short.txt")
        if channel == "push" and short is not None:
            short = shorten(short, PUSH_BODY_MAX)
        return Rendered(
            subject=subject,
            text=out["txt"],
            html=out.get("html"),
            short=short,
            urgent=message.category in _URGENT,
            language=lang,
            text_language=text_language,
            unsubscribe_url=self._unsubscribe_url(channel, read_url),
        )

    def own_text(
        self, message: Message, delivery: Delivery, *, reply: Reply | None = None
    ) -> tuple[str, str] | None:
        """Our own absence text of ``message`` as ``delivery``'s recipient reads it in the
        app and on the pages: its in-app rendering from this delivery's facts (the
        neutral ones where a protected child is concerned), in its language, as the SMS
        and push were. None for a staff member's text, which is shown as written.
        ``reply``: how an alert asks for the answer where it is shown, when not in the
        app: "link" on a read page that leads to the answer form, "none" on one that no
        longer does (answered, cancelled)."""
        absence = delivery.context.get(ABSENCE_CONTEXT_KEY)
        if not absence:
            return None
        context = delivery.context
        if reply is not None:
            context = {**context, ABSENCE_CONTEXT_KEY: {**absence, "reply": reply}}
        inapp = delivery.model_copy(update={"channel": "inapp", "context": context})
        out = self.render(message, inapp)
        return out.subject, out.text

    def _choose(self, job: _Job) -> tuple[str, dict[str, str], str]:
        """The parts, and for an SMS the parts with our texts folded to GSM-7 when only
        our texts' letters (ą, č, á...) make it UCS-2 (:func:`_sms_parts`)."""
        kind = self._kind_of(job)
        parts, gsm = self._parts_for(job, kind, False)
        if gsm:
            return parts  # surely all GSM-7 already

        def folded() -> _Parts | None:
            if kind is not None and self._stencils.surely_ucs2(kind, True):
                return None  # folded, it would still be UCS-2
            return self._parts_for(job, kind, True)[0]

        return _sms_parts(job.delivery.channel, parts, folded)

    def _kind_of(self, job: _Job) -> _Kind | None:
        """The kind of delivery ``job`` is, its stencils are found by; None: render it
        directly."""
        return self._stencils.kind_of(job)

    def _parts_for(
        self, job: _Job, kind: _Kind | None, sms_fold: bool
    ) -> tuple[tuple[str, dict[str, str], str], bool]:
        """The parts from a stencil of deliveries like this one, else rendered for it, and
        whether they are surely all GSM-7 (False: not known)."""
        if kind is not None:
            found = self._stencils.parts(job, kind, sms_fold)
            if found is not None:
                return found
        return self._finish(job.lang, *self._raw_parts(job, sms_fold=sms_fold)), False

    def _finish(
        self, lang: str, subject: str, raw: dict[str, str], text_language: str
    ) -> tuple[str, dict[str, str], str]:
        """Isolates kept for right to left, else dropped; parts stripped."""
        if is_rtl(lang):
            return subject, {part: text.strip() for part, text in raw.items()}, text_language
        out = {part: _unmark(text.strip()) for part, text in raw.items()}
        return _unmark(subject), out, text_language

    def _raw_parts(
        self,
        job: _Job,
        *,
        sms_fold: bool,
        read_url: str | None = None,
        children: tuple[str, str] | None = None,
    ) -> tuple[str, dict[str, str], str]:
        """The subject and each part as the templates give them, and the language the
        staff text is in (a translation's, else the message's own). ``read_url`` and
        ``children`` (the concerns line and the names) stand in for the delivery's own
        (a stencil's stand-ins, see :class:`_Stencils`)."""
        message, delivery, lang = job.message, job.delivery, job.lang
        url = job.read_url if read_url is None else read_url
        variables = self._variables(message, delivery, lang, url, sms_fold, children)
        variables["files"] = self._files(job.files, delivery.channel, url)
        template = _TEMPLATES.get(message.event_type, _DEFAULT_TEMPLATE)
        text_language = job.source_language
        translation = job.translation
        if translation is not None and template != _ABSENCE_TEMPLATE:
            texts = (self._folded if sms_fold else self._texts)[lang]
            variables.update(
                self._translated(message, translation, texts, lang, job.source_language)
            )
            variables["original_url"] = url
            text_language = translation.language
        if template == _ABSENCE_TEMPLATE:
            # Our own texts: the subject too is in the recipient's language.
            subject = self._template("subject/absence.txt").render(variables)
            variables["subject"] = _one_line(subject)
        raw = {
            part: self._template(f"{delivery.channel}/{template}.{part}").render(variables)
            for part in job.parts
        }
        return variables["subject"], raw, text_language

    def _variables(
        self,
        message: Message,
        delivery: Delivery,
        lang: str,
        read_url: str | None,
        sms_fold: bool = False,
        children_text: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        texts = (self._folded if sms_fold else self._texts)[lang]
        context = delivery.context
        children = _context_names(context.get("children"))
        concerns, children_names = children_text or _children_text(children, texts, lang)
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
                # "skolen", and "Skolen" where it starts a sentence (absence/phrases.txt)
                start = place[:1].upper() + place[1:]
                absence = absence | {"unit": place, "unit_start": start, "group": None}
        if absence:
            absence = _marked_absence(absence, lang, sms_fold)
        subject = _unmark(_one_line(message.subject))  # only ours mark the text
        if message.category is Category.emergency:
            subject = f"{texts['important']} {_mark(subject)}"
        reminder = is_reminder(delivery)
        if reminder:
            subject = f"{texts['reminder_prefix']} {subject}"
        return {
            "lang": lang,
            "dir": direction(lang),
            "category": message.category.value,
            "subject": subject,
            "body": message.body.strip(),
            "paragraphs": _paragraphs(message.body),
            "header": (
                texts["header"].format(sender=_mark(from_name))
                if from_name
                else texts["neutral_header"]
                if neutral
                else None
            ),
            "concerns": concerns,
            # SMS: the children on the sender's line ("Solvang skole (Ola og Kari): ...").
            "children_names": children_names,
            # Staff get a staff footer (why they get it, the staff pages), not the parent one.
            "staff": delivery.recipient_role is Role.staff,
            "staff_reason": (
                texts["staff_reason_unit"].format(unit=_mark(unit))
                if unit
                else texts["staff_reason"]
            ),
            "staff_pages": texts["staff_pages"],
            "staff_pages_url": f"{self._public_url}/staff/{'absence' if absence else 'messages'}",
            "reason": texts["reason_unit"].format(unit=_mark(unit)) if unit else texts["reason"],
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
            "notice": None,  # a translation's notice (see _translated)
            "original_url": None,
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
        link = self._read_url(carrier)

        def digest(sms_fold: bool) -> _Parts:
            raw = self._raw_digest(items, carrier, lang, link, parts, sms_fold=sms_fold)
            return self._finish(lang, *raw)

        subject, out, _ = _sms_parts(channel, digest(False), lambda: digest(True))
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

    def _raw_digest(
        self,
        items: Sequence[tuple[Message, Delivery]],
        carrier: Delivery,
        lang: str,
        link: str | None,
        parts: tuple[str, ...],
        *,
        sms_fold: bool,
    ) -> tuple[str, dict[str, str], str]:
        """The digest's subject and each part as the templates give them (to be finished
        as every render is), our texts folded to GSM-7 if ``sms_fold``, and the language
        of the staff's subjects, as :meth:`render` takes it when not told."""
        texts = (self._folded if sms_fold else self._texts)[lang]
        entries = []
        for message, delivery in items:
            url = self._read_url(delivery)
            one = self._variables(message, delivery, lang, url, sms_fold)
            entries.append(
                {
                    "sender": one["sms_from"],
                    "children_names": one["children_names"],
                    "subject": one["subject"],
                    "read_url": url,
                }
            )
        variables = self._variables(items[0][0], carrier, lang, link, sms_fold)
        subject = texts["digest_subject"].format(count=len(items))
        variables.update(items=entries, subject=subject, inbox_url=self._inbox_url(link))
        raw = {
            part: self._template(f"{carrier.channel}/digest.{part}").render(variables)
            for part in parts
        }
        return subject, raw, DEFAULT_LANGUAGE

    def _inbox_url(self, read_url: str | None) -> str:
        """The guardian's inbox on the parent pages (the read link's token under /p/)."""
        if read_url is None or READ_PATH not in read_url:
            return f"{self._public_url}/app"
        return f"{self._public_url}{PARENT_PATH}{read_url.rpartition(READ_PATH)[2]}"

    def _translated(
        self,
        message: Message,
        translation: Translation,
        texts: Mapping[str, Any],
        lang: str,
        source: str,
    ) -> dict[str, Any]:
        key = (
            "sender_translated"
            if translation.origin is TranslationOrigin.teacher
            else "machine_translated"
        )
        subject = _one_line(translation.subject)
        if message.category is Category.emergency:
            subject = f"{texts['important']} {_mark(subject)}"
        return {
            "subject": subject,
            "body": translation.body.strip(),
            "paragraphs": _paragraphs(translation.body),
            "notice": texts[key].format(language=_source_name(source, lang, texts["norwegian"])),
        }

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
