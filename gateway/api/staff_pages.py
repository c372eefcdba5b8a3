"""Staff pages (``/staff/...``): sign-in by link, and who one message reached.

* ``POST /v1/staff/{staff_id}/tokens`` (tenant key): a short-lived sign-in link for
  a staff member, optionally straight to one message. A tenant key alone never
  opens a page: only the cookie the link sets does.
* ``GET /staff/signin/{token}``: sets the session (a signed, HttpOnly, SameSite
  cookie with an expiry) and redirects to the message or the list. A link works once:
  its id is recorded as used in the store until it expires, and a second use is 410.
* ``GET /staff/messages/{id}``: per child, grouped by class, whether the message
  reached a guardian with rights, by whom, how and when; the children not reached
  first, each with why in plain words (gateway/notreached.py); per guardian the
  channels and statuses, and why anyone was left out.
* ``GET /staff/messages/{id}/not-reached.csv``: the children not reached with their
  guardians' phone numbers, for phoning round.
* ``POST /staff/signout``: ends every session of the staff member, in this browser and
  any other, and any copy of the cookie: each session carries the staff member's
  session generation from sign-in, every page request compares it with the store's,
  and a sign-out writes a new one (``StaffSessionStore``).

What a staff member may see: messages they sent or received, and messages that
concern a group they belong to or a child in one; a staff member who belongs to a
unit but to none of its groups (the office) sees the whole unit. Anything else is
403. Persons with a protected address appear exactly as in the status API: without
the tenant's ``protected`` scope only as the status API's pseudonym, without name,
class or number; an absence subject is hidden then too. Both are decided by
:mod:`gateway.pseudonyms` alone (``names_for``, ``hides_subject``).
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, Field

from gateway import scheduling
from gateway.api import spec
from gateway.api.absence import absences
from gateway.api.body import read_model
from gateway.api.context import CTX, AppContext
from gateway.api.pages import (
    BAD_FORM,
    CSRF_FIELD,
    FORM_CSRF,
    checked_form,
    full_name,
    load_texts,
    page_get,
    page_post,
    problem,
    read_pages,
    render,
    respond,
    session_from,
    set_session_cookie,
    when,
)
from gateway.api.paging import before_time
from gateway.api.readlinks import SECURITY_HEADERS
from gateway.api.responses import Instant, respond_json
from gateway.auth import AuthStore, authenticate_bearer
from gateway.constants import STAFF_LANGUAGES, SUPPRESSED_CHANNEL
from gateway.errors import Forbidden, LinkInvalid, NotFound
from gateway.locales import is_fallback, language_name, resolve_language
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    DirectorySnapshot,
    Message,
    Person,
    Role,
    Strict,
    TranslationOrigin,
)
from gateway.models import Scope as KeyScope
from gateway.notreached import FAILED, Why, failure_kind, why_not_reached
from gateway.pseudonyms import Names, NamesStore, hides_subject, names_for
from gateway.sessions import STAFF_SESSION_SALT, PageUser, open_staff_link, staff_link
from gateway.store.ports import (
    DeliveryStore,
    JobQueue,
    MessageStore,
    ReachStore,
    ScheduleFiles,
    StaffSessionStore,
    Translations,
)
from gateway.tracker import RecipientReach, reach
from gateway.waiting import WAITING, channel_down, job_of

STAFF_COOKIE = "budbringer_staff"
STAFF_PATH = "/staff"
SIGNIN_PATH = "/staff/signin/"
TEXTS = web.AppKey("staff_texts", dict)
# Channels in the order the planner uses them (gateway/planner.py), in-app first.
_CHANNEL_ORDER = {"inapp": 0, "push": 1, "sms": 2, "email": 3}


class _Ports(
    AuthStore,
    NamesStore,
    DeliveryStore,
    MessageStore,
    ReachStore,
    ScheduleFiles,
    Translations,
    JobQueue,
    StaffSessionStore,
    Protocol,
):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class StaffLinkRequest(Strict):
    """Body of ``POST /v1/staff/{staff_id}/tokens`` (may be left out)."""

    message_id: str | None = Field(default=None, min_length=1, max_length=64)


class StaffLink(BaseModel):
    """Response of ``POST /v1/staff/{staff_id}/tokens``: the link, valid until ``expires_at``."""

    link: str
    token: str
    expires_at: Instant


# --------------------------------------------------------------------------- sign-in


async def post_staff_token(request: web.Request) -> web.Response:
    """201 ``{"link", "token", "expires_at"}``: a sign-in link for a staff member.

    404 if the person (or the message) is not in this tenant; 403 if the person is
    not staff."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), KeyScope.directory)
    person = await _store(ctx).get_person(tenant.id, request.match_info["staff_id"])
    if person is None:
        raise NotFound("person not found")
    if person.role is not Role.staff:
        raise Forbidden("only staff members sign in to the staff pages")
    body = StaffLinkRequest()
    if request.can_read_body:
        body = await read_model(request, StaffLinkRequest, ctx.settings.max_body_bytes)
    message_id = body.message_id or ""
    if message_id and await _store(ctx).get_message(tenant.id, message_id) is None:
        raise NotFound("message not found")
    ttl = timedelta(seconds=ctx.settings.staff_link_ttl)
    token, expires_at = staff_link(
        ctx.secret, tenant.id, person.id, message_id, ctx.clock.now(), ttl
    )
    link = ctx.settings.public_url.rstrip("/") + SIGNIN_PATH + token
    return respond_json(StaffLink(link=link, token=token, expires_at=expires_at), status=201)


def staff_problem(request: web.Request, kind: str, status: int, root: str) -> web.Response:
    return problem(read_pages(request.app), request.app[TEXTS]["problems"][kind], status, root)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Open a sign-in link (once): set the session cookie and go to the message (or the
    list)."""
    ctx = request.app[CTX]
    store, now = _store(ctx), ctx.clock.now()
    try:
        link = open_staff_link(ctx.secret, request.match_info["token"], now)
    except LinkInvalid:
        return staff_problem(request, "link", 401, "../../")
    person = await store.get_person(link.tenant_id, link.staff_id)
    if person is None or person.role is not Role.staff:
        return staff_problem(request, "link", 401, "../../")
    if not await store.use_signin_link(link.tenant_id, link.link_id, now, link.expires_at):
        return staff_problem(request, "used", 410, "../../")
    generation = await store.staff_session_generation(link.tenant_id, link.staff_id)
    # Relative, so it works behind a proxy with a path prefix.
    target = f"../messages/{link.message_id}" if link.message_id else "../messages"
    response = web.HTTPSeeOther(location=target, headers=SECURITY_HEADERS)
    ttl = timedelta(seconds=ctx.settings.staff_session_ttl)
    staff = (link.tenant_id, link.staff_id)
    set_session_cookie(
        response, ctx, STAFF_COOKIE, STAFF_SESSION_SALT, staff, ttl, STAFF_PATH, generation
    )
    raise response


async def signed_in_staff(request: web.Request, root: str) -> PageUser | web.Response:
    """The signed-in staff member, or the page asking to sign in (again)."""
    ctx = request.app[CTX]
    try:
        session = session_from(request, STAFF_COOKIE, STAFF_SESSION_SALT)
    except LinkInvalid:  # none, forged or expired alike: sign in again
        return staff_problem(request, "signin", 401, root)
    current = await _store(ctx).staff_session_generation(session.tenant_id, session.person_id)
    if session.generation != current:  # signed out since (here or in another browser)
        return staff_problem(request, "signin", 401, root)
    person = await _store(ctx).get_person(session.tenant_id, session.person_id)
    if person is None or person.role is not Role.staff:
        return staff_problem(request, "signin", 401, root)
    lang = resolve_language(person.language, STAFF_LANGUAGES)
    return PageUser(session, person, lang, request.app[TEXTS][lang])


async def sign_out(request: web.Request) -> web.StreamResponse:
    """End every session of the staff member (any browser, any copy of the cookie)."""
    staff = await signed_in_staff(request, "../")
    if isinstance(staff, web.Response):
        return staff
    if await checked_form(request, staff.session) is None:
        return staff_problem(request, "refused", 403, "../")
    await _store(request.app[CTX]).end_staff_sessions(
        staff.session.tenant_id, staff.session.person_id
    )
    response = staff_problem(request, "signed_out", 200, "../")
    response.del_cookie(STAFF_COOKIE, path=STAFF_PATH)
    return response


# --------------------------------------------------------------------------- who may see


@dataclass(frozen=True)
class Scope:
    """The groups a staff member sees, and the units they see whole (the office)."""

    groups: frozenset[str]
    units: frozenset[str]

    @classmethod
    def of(cls, person: Person, directory: DirectorySnapshot) -> Scope:
        group_units = {
            directory.groups[g].unit_id for g in person.group_ids if g in directory.groups
        }
        return cls(frozenset(person.group_ids), frozenset(set(person.unit_ids) - group_units))

    def covers(self, person: Person) -> bool:
        return bool(self.groups.intersection(person.group_ids)) or bool(
            self.units.intersection(person.unit_ids)
        )


def _involved(message: Message, staff_id: str) -> bool:
    return message.sender_id == staff_id or staff_id in message.audience.staff


def _may_see(message: Message, staff: Person, scope: Scope, children: list[Person]) -> bool:
    audience = message.audience
    return (
        _involved(message, staff.id)
        or bool(scope.groups.intersection(audience.groups))
        or bool(scope.units.intersection(audience.units))
        or any(scope.covers(child) for child in children)
    )


# --------------------------------------------------------------------------- one message


@dataclass
class ChildRow:
    name: str
    reached: bool
    line: str  # who read it, how and when; or why not
    guardians: list[str] = field(default_factory=list)
    # for the CSV: (guardian's name, number) to phone
    phones: list[tuple[str, str]] = field(default_factory=list)
    group: str = ""


@dataclass
class MessageView:
    message: Message
    subject: str
    not_reached: list[ChildRow]
    reached: list[ChildRow]
    summary: str
    group_ids: set[str]  # the classes of the children shown
    hidden: bool = False  # the subject is hidden (a protected person): so are translations


class Namer:
    """Names of persons as this staff member may see them (one rule: pseudonyms.Names)."""

    def __init__(self, directory: DirectorySnapshot, names: Names, t: Any):
        self.directory, self.names, self.t = directory, names, t

    def hides(self, person_id: str) -> bool:
        return self.names.hides(person_id)

    def __call__(self, person_id: str) -> str:
        if self.names.hides(person_id):
            return str(self.t["protected"].format(alias=self.names(person_id)))
        person = self.directory.persons.get(person_id)
        return full_name(person) if person is not None else self.names(person_id)

    def group(self, person_id: str) -> str:
        person = self.directory.persons.get(person_id)
        if person is None or self.names.hides(person_id):
            return str(self.t["no_class"])
        classes = [
            self.directory.groups[g].name for g in person.group_ids if g in self.directory.groups
        ]
        return ", ".join(sorted(classes)) or str(self.t["no_class"])

    def phone(self, person_id: str) -> str | None:
        person = self.directory.persons.get(person_id)
        if person is None or self.names.hides(person_id):
            return None
        return person.phone


def _why_line(why: Why, t: Any, lang: str) -> str:
    text: str = t["why"][why.code]
    channel = t["channels"].get(why.channel or "", why.channel or "")
    at = when(why.at, lang) if why.at is not None else ""
    return text.format(when=at, channel=channel)


def _status_text(
    channel: str, status: DeliveryStatus, t: Any, down: dict[str, str], failed: dict[str, str]
) -> str:
    """A channel's status in words; a send waiting while the channel's provider is down
    says so, not "sendes" for minutes (it is not the guardian's doing); a failed one
    says why ("feilet: telefonen var avslått eller utenfor dekning")."""
    if status in WAITING and channel in down:
        return str(t["channel_down"][down[channel]])
    word = str(t["statuses"][status.value])
    kind = failure_kind(failed.get(channel)) if status in FAILED else "other"
    return word if kind == "other" else f"{word}: {t['failure'][kind]}"


def _phone_note(phone: str, failed_sms: tuple[str, str] | None, t: Any) -> str:
    """A number to phone round with, marked when this message's SMS to this very number
    (``failed_sms``: its reason and address) failed because of the number itself
    (unknown, not a mobile) or because the guardian answered STOP."""
    reason, address = failed_sms or ("", "")
    kind = failure_kind(reason) if address == phone else "other"
    return f"{phone} ({t['failure'][kind]})" if kind in ("number", "opted_out") else phone


def _guardian_line(
    recipient: RecipientReach,
    name: str,
    t: Any,
    fallback: str | None = None,
    down: dict[str, str] | None = None,
    failed: dict[str, str] | None = None,
) -> str:
    parts = [
        t["channel_status"].format(
            channel=t["channels"].get(channel, channel),
            status=_status_text(channel, status, t, down or {}, failed or {}),
        )
        for channel, status in sorted(
            recipient.channels.items(), key=lambda item: _CHANNEL_ORDER.get(item[0], 9)
        )
    ]
    if recipient.read_at is not None:
        parts.insert(0, t["read_via"].format(via=t["via"].get(recipient.via or "", "")).strip())
    if fallback is not None:  # never silent: we wrote in Bokmål, not in their language
        parts.append(t["language_fallback"].format(language=fallback))
    return str(t["guardian_status"].format(name=name, status=", ".join(parts)))


async def _message_view(
    ctx: AppContext, staff: PageUser, message: Message, deliveries: list[Delivery]
) -> MessageView | None:
    """What the page shows, or None when the staff member may not see the message."""
    tenant_id, t, lang = staff.session.tenant_id, staff.texts, staff.lang
    view = reach(message, deliveries, await _store(ctx).list_reads(tenant_id, message.id))
    recipients = sorted({d.recipient_id for d in deliveries})
    directory = await _store(ctx).load_audience(
        tenant_id,
        Audience(children=sorted(view.children), guardians=[], staff=[staff.person.id]),
    )
    extra = [p for p in recipients if p not in directory.persons]
    for person_id in extra:
        person = await _store(ctx).get_person(tenant_id, person_id)
        if person is not None:
            directory.persons[person_id] = person
    children = [directory.persons[c] for c in view.children if c in directory.persons]
    scope = Scope.of(staff.person, directory)
    if not _may_see(message, staff.person, scope, children):
        return None
    # Who sent or received it sees every child; others the children of their groups
    # (the office: of their units), never another unit's.
    shown = set(view.children)
    if not _involved(message, staff.person.id):
        shown = {c.id for c in children if scope.covers(c)}
    # An absence message names its child (and who reported it) in its subject, also
    # when its deliveries go to staff alone: they are hidden by the same names.
    absence = await absences(ctx).status(message)
    named = shown | set(recipients) | (absence.persons if absence is not None else set())
    names = await names_for(_store(ctx), ctx.secret, tenant_id, named)
    namer = Namer(directory, names, t)
    why = why_not_reached(view, deliveries, ctx.clock.now())
    left_out: dict[str, list[tuple[str, str]]] = {}
    for d in deliveries:
        if d.channel == SUPPRESSED_CHANNEL:
            reason = t["left_out"].get(d.reason or "", t["left_out"]["other"])
            left_out.setdefault(d.target, []).append((d.recipient_id, reason))
    fallbacks = {
        d.recipient_id: language_name(d.language, lang)
        for d in deliveries
        if d.channel != SUPPRESSED_CHANNEL and is_fallback(d.language)
    }
    # recipient -> channel -> the state of the channel its send waits for (waiting.py)
    now = ctx.clock.now()
    waiting = [d for d in deliveries if d.status in WAITING]
    jobs = await _store(ctx).get_jobs([job_of(d) for d in waiting]) if waiting else {}
    down: dict[str, dict[str, str]] = {}
    for d in waiting:
        if state := channel_down(d, jobs.get(job_of(d)), ctx.channel_health, now):
            down.setdefault(d.recipient_id, {})[d.channel] = state
    # recipient -> channel -> the reason its send failed (a later send on that channel,
    # say the escalation's, may have gone: the line shows the best status), and the
    # number the failed SMS went to
    failed: dict[str, dict[str, str]] = {}
    failed_sms: dict[str, tuple[str, str]] = {}
    for d in deliveries:
        if d.status in FAILED and d.reason:
            failed.setdefault(d.recipient_id, {})[d.channel] = d.reason
            if d.channel == ChannelName.sms and d.address:
                failed_sms[d.recipient_id] = (d.reason, d.address)
    rows_not: list[ChildRow] = []
    rows_yes: list[ChildRow] = []
    for child_id in sorted(shown, key=lambda c: (namer.group(c), namer(c))):
        child = view.children[child_id]
        told = [r for r in view.recipients.values() if child_id in r.child_ids]
        guardians = [
            _guardian_line(
                r,
                namer(r.recipient_id),
                t,
                fallbacks.get(r.recipient_id),
                down.get(r.recipient_id),
                failed.get(r.recipient_id),
            )
            for r in told
        ]
        guardians += [
            t["guardian_left_out"].format(name=namer(pid), reason=reason)
            for pid, reason in left_out.get(child_id, [])
        ]
        if child.reached:
            first = view.recipients[child.reached_by[0]]
            line = t["reached_by"].format(
                names=", ".join(namer(r) for r in child.reached_by),
                via=t["via"].get(first.via or "", ""),
                when=when(child.reached_at, lang) if child.reached_at else "",
            )
        else:
            line = _why_line(why[child_id], t, lang)
        phones = [
            (namer(r.recipient_id), _phone_note(p, failed_sms.get(r.recipient_id), t))
            for r in told
            if (p := namer.phone(r.recipient_id))
        ]
        row = ChildRow(namer(child_id), child.reached, " ".join(line.split()), guardians, phones)
        row.group = namer.group(child_id)
        (rows_yes if child.reached else rows_not).append(row)
    # the guardians of the children shown (a teacher sees their class of a wider message)
    counted = [
        r
        for r in view.recipients.values()
        if shown == set(view.children) or shown.intersection(r.child_ids)
    ]
    total = len(counted)
    read = sum(1 for r in counted if r.read_at is not None)
    # "guardians" where the message is about children; staff alone got it: "recipients"
    key = "summary" if view.children else "summary_recipients"
    summary = t[key].format(read=read, total=total, not_reached=len(rows_not))
    hidden = hides_subject(message, names)
    subject = t["protected_subject"] if hidden else _plain_subject(message)
    group_ids = {
        g
        for c in shown
        if c in directory.persons and not names.hides(c)
        for g in directory.persons[c].group_ids
    }
    return MessageView(message, subject, rows_not, rows_yes, summary, group_ids, hidden)


def _plain_subject(message: Message) -> str:
    """The subject on one line, as the pages show it (unless it is hidden)."""
    return " ".join(message.subject.split())


def _grouped(rows: list[ChildRow]) -> list[tuple[str, list[ChildRow]]]:
    groups: dict[str, list[ChildRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    return list(groups.items())


async def _load_message(
    request: web.Request, root: str
) -> tuple[PageUser, MessageView] | web.Response:
    ctx = request.app[CTX]
    staff = await signed_in_staff(request, root)
    if isinstance(staff, web.Response):
        return staff
    message = await _store(ctx).get_message(staff.session.tenant_id, request.match_info["id"])
    if message is None:
        return staff_problem(request, "gone", 404, root)
    deliveries = await _store(ctx).list_deliveries(staff.session.tenant_id, message.id)
    view = await _message_view(ctx, staff, message, deliveries)
    if view is None:
        return staff_problem(request, "forbidden", 403, root)
    return staff, view


async def _sent_line(ctx: AppContext, message: Message, t: Any, lang: str) -> tuple[str, bool]:
    """ "Sent …", or for a scheduled message "Scheduled for …" / "Cancelled …"; and
    whether it is still to be sent."""
    schedule = await scheduling.schedule_of(_store(ctx), message)
    if schedule is None:
        return str(t["sent"].format(when=when(message.created_at, lang))), False
    key = {scheduling.SCHEDULED: "scheduled_for", scheduling.CANCELLED: "schedule_cancelled"}
    line = t[key.get(schedule.state, "sent")].format(when=when(schedule.send_at, lang))
    return str(line), schedule.state == scheduling.SCHEDULED


def _empty_line(view: MessageView, t: Any, waiting: bool) -> str:
    """What the page says instead of "reached" and "not reached" when the message has no
    children (yet): to be sent, or sent to staff alone; "" when it has children."""
    if view.not_reached or view.reached:
        return ""
    # scheduled, or accepted and not planned yet (a queue behind a broadcast)
    waiting = waiting or view.message.planned_at is None
    return str(t["not_sent_yet"] if waiting else t["no_children"])


def _reason_text(reason: str | None, t: Any) -> str:
    """Why a translation failed, in words (the code as stored where we have none)."""
    if not reason:
        return ""
    words = t["translation_reasons"]
    status = reason.removeprefix("provider_")
    if status != reason and status.isdigit():
        return str(words["provider"].format(code=status))
    return str(words.get(reason, reason))


async def _translation_lines(
    ctx: AppContext, message: Message, lang: str, t: Any, *, hidden: bool
) -> list[str]:
    """One line per language the message went out in besides its own (gateway/translations)."""
    if hidden:
        return []
    rows = await _store(ctx).translations.of_message(message.tenant_id, message.id)
    lines = []
    for code, row in sorted(rows.items()):
        if row.origin is TranslationOrigin.source:
            continue
        language = language_name(code, lang)
        line = t[f"translation_{row.origin.value}"].format(
            language=language, provider=row.provider or "", reason=_reason_text(row.reason, t)
        )
        lines.append(line)
    return lines


async def message_page(request: web.Request) -> web.Response:
    root = "../../"
    found = await _load_message(request, root)
    if isinstance(found, web.Response):
        return found
    staff, view = found
    ctx = request.app[CTX]
    t = staff.texts
    message = view.message
    translations = await _translation_lines(ctx, message, staff.lang, t, hidden=view.hidden)
    sent, waiting = await _sent_line(ctx, message, t, staff.lang)
    html = render(
        read_pages(request.app),
        "pages/staff_message.html",
        root,
        lang=staff.lang,
        t=t,
        wide=True,
        title=view.subject,
        subject=view.subject,
        category=t["categories"][message.category.value],
        sent=sent,
        empty_line=_empty_line(view, t, waiting),
        summary=view.summary,
        not_reached=_grouped(view.not_reached),
        reached=_grouped(view.reached),
        counts=(len(view.not_reached), len(view.reached)),
        csv_href=f"{message.id}/not-reached.csv",
        translations=translations,
        current="",
        signed_in=t["signed_in"].format(name=full_name(staff.person)),
        csrf=staff.session.csrf(ctx.secret),
        csrf_field=CSRF_FIELD,
    )
    return respond(html)


# --------------------------------------------------------------------------- the list

LIST_PAGE = 20
LIST_BATCH = 50
LIST_SCAN = 300  # messages looked at for one page at most; "older" goes on from there


@dataclass(frozen=True)
class ListQuery:
    category: str
    group: str
    q: str
    before: datetime | None
    before_id: str | None

    @classmethod
    def of(cls, request: web.Request) -> ListQuery:
        category = request.query.get("category", "")
        if category not in {c.value for c in Category}:
            category = ""
        before = None
        raw = request.query.get("before")
        if raw:
            with contextlib.suppress(ValueError):
                before = before_time(raw)
        group = request.query.get("group", "")[:128]
        before_id = request.query.get("before_id", "")[:128] or None
        q = " ".join(request.query.get("q", "").split())[:200]
        return cls(category, group, q, before, before_id if before else None)

    def matches(self, message: Message, hidden: str) -> bool:
        """Whether ``message`` may be listed: its category, and a subject as shown that
        could hold the search (the subject, or ``hidden``, the text that hides it):
        cheap, before the message's view is built."""
        if self.category and message.category.value != self.category:
            return False
        return not self.q or any(
            self.q.casefold() in text.casefold() for text in (_plain_subject(message), hidden)
        )

    def matches_subject(self, shown: str) -> bool:
        """The search is in the subject as shown: a hidden one finds nothing by the
        name it hides."""
        return not self.q or self.q.casefold() in shown.casefold()


async def _group_choices(ctx: AppContext, staff: PageUser) -> list[tuple[str, str]]:
    """The groups a staff member can filter by: theirs, and every group of a unit they
    see whole."""
    person = staff.person
    directory = await _store(ctx).load_audience(
        staff.session.tenant_id, Audience(staff=[person.id])
    )
    scope = Scope.of(person, directory)
    if scope.units:
        wider = await _store(ctx).load_audience(
            staff.session.tenant_id, Audience(units=sorted(scope.units), staff=[person.id])
        )
        directory.groups.update(wider.groups)
    return sorted(
        (
            (g.id, g.name)
            for g in directory.groups.values()
            if g.id in scope.groups or g.unit_id in scope.units
        ),
        key=lambda item: item[1],
    )


async def messages_page(request: web.Request) -> web.Response:
    """The messages a staff member may see, newest first, with their reach in one line."""
    root = "../"
    ctx = request.app[CTX]
    staff = await signed_in_staff(request, root)
    if isinstance(staff, web.Response):
        return staff
    query = ListQuery.of(request)
    t, tenant_id = staff.texts, staff.session.tenant_id
    rows: list[dict[str, Any]] = []
    cursor, cursor_id = query.before, query.before_id
    scanned, exhausted = 0, False
    while len(rows) < LIST_PAGE and scanned < LIST_SCAN:
        batch = await _store(ctx).list_messages(
            tenant_id, limit=LIST_BATCH, before=cursor, before_id=cursor_id
        )
        if not batch:
            exhausted = True
            break
        for message in batch:
            cursor, cursor_id, scanned = message.created_at, message.id, scanned + 1
            if not query.matches(message, t["protected_subject"]):
                continue
            deliveries = await _store(ctx).list_deliveries(tenant_id, message.id)
            view = await _message_view(ctx, staff, message, deliveries)
            if view is None or not query.matches_subject(view.subject):
                continue
            if query.group and not (
                query.group in view.group_ids or query.group in message.audience.groups
            ):
                continue
            rows.append(
                {
                    "href": f"messages/{message.id}",
                    "subject": view.subject,
                    "category": t["categories"][message.category.value],
                    "when": (await _sent_line(ctx, message, t, staff.lang))[0],
                    "summary": view.summary,
                    "missing": bool(view.not_reached),
                }
            )
            if len(rows) == LIST_PAGE:
                break
        if len(batch) < LIST_BATCH and len(rows) < LIST_PAGE:
            exhausted = True
            break
    older = None
    if not exhausted and cursor is not None:
        params = {"category": query.category, "group": query.group, "q": query.q}
        params = {k: v for k, v in params.items() if v}
        cursor_params = {"before": cursor.isoformat(), "before_id": cursor_id or ""}
        older = "messages?" + urlencode({**params, **cursor_params})
    html = render(
        read_pages(request.app),
        "pages/staff_messages.html",
        root,
        lang=staff.lang,
        t=t,
        wide=True,
        title=t["list_title"],
        current="messages",
        rows=rows,
        older=older,
        chosen=query,
        categories=[(c.value, t["categories"][c.value]) for c in Category],
        groups=await _group_choices(ctx, staff),
        signed_in=t["signed_in"].format(name=full_name(staff.person)),
        csrf=staff.session.csrf(ctx.secret),
        csrf_field=CSRF_FIELD,
    )
    return respond(html)


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def not_reached_csv(request: web.Request) -> web.Response:
    found = await _load_message(request, "../../../")
    if isinstance(found, web.Response):
        return found
    staff, view = found
    out = io.StringIO()
    # the column separator the staff member's spreadsheet expects (";" in Norwegian)
    writer = csv.writer(out, delimiter=staff.texts["csv_delimiter"], lineterminator="\r\n")
    writer.writerow(staff.texts["csv_header"])
    for row in view.not_reached:
        # names come from the directory; numbers are E.164, checked on import. Each
        # number with whose it is: a teacher phoning round asks for the right person.
        phones = " / ".join(f"{name}: {phone}" for name, phone in row.phones)
        writer.writerow([_cell(row.name), _cell(row.group), _cell(row.line), _cell(phones)])
    return web.Response(
        body=("\ufeff" + out.getvalue()).encode("utf-8"),  # BOM: Excel reads UTF-8
        content_type="text/csv",
        charset="utf-8",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": 'attachment; filename="not-reached.csv"',
        },
    )


COOKIE_NOTE = " Needs the session cookie a sign-in link sets; a tenant key alone opens no page."
SIGN_IN_AGAIN = spec.page("Page (nb + en): sign in (again)")
_MESSAGE_ID = spec.path("id", "Message id")
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/staff/{staff_id}/tokens"): spec.Operation(
        tag="directory",
        summary="A short-lived sign-in link to the staff pages for a staff member",
        description=(
            "Opening the link sets a signed, HttpOnly, SameSite session cookie and"
            " goes to the message (``message_id``) or the message list. The link works"
            " once, until ``expires_at``."
        ),
        security=spec.tenant("directory"),
        params=(spec.path("staff_id", "Staff member id"),),
        body=spec.Body(StaffLinkRequest, required=False),
        responses={201: spec.Response("Sign-in link issued", StaffLink)},
        errors=(401, 403, 404, *spec.BODY_ERRORS, 422),
    ),
    ("GET", "/staff/signin/{token}"): page_get(
        "Open a staff sign-in link: set the session cookie, then 303 to the message",
        "The token of `POST /v1/staff/{staff_id}/tokens`. A link works once.",
        (spec.path("token", "The sign-in token"),),
        {
            303: spec.Response("Signed in; on to the message or the list"),
            401: spec.page("Page (nb + en): the link is invalid or has expired"),
            410: spec.page("Page (nb + en): the link has been used already (a link works once)"),
        },
    ),
    ("GET", "/staff/messages"): page_get(
        "The messages a staff member may see, newest first, with their reach",
        "Filtered by category, group and subject; paged with `before`." + COOKIE_NOTE,
        (
            spec.query("category", "A category, or empty for all"),
            spec.query("group", "A group id, or empty for all"),
            spec.query("q", "Words the subject contains"),
            spec.query("before", "Page: the last message's created_at (ISO 8601)"),
            spec.query("before_id", "Page: the last message's id"),
        ),
        {200: spec.page("The list"), 401: SIGN_IN_AGAIN},
    ),
    ("GET", "/staff/messages/{id}"): page_get(
        "Who one message reached, per child by class, the children not reached first",
        "Why each child was not reached, per guardian the channels and statuses, and who"
        " was left out and why." + COOKIE_NOTE,
        (_MESSAGE_ID,),
        {
            200: spec.page("The page, in the staff member's language"),
            401: SIGN_IN_AGAIN,
            403: spec.page(
                "Page (nb + en): the message is not for the staff member's units or groups"
            ),
            404: spec.page("Page (nb + en): no such message"),
        },
    ),
    ("GET", "/staff/messages/{id}/not-reached.csv"): page_get(
        "The children not reached, with their guardians' numbers (CSV)",
        "For phoning round." + COOKIE_NOTE,
        (_MESSAGE_ID,),
        {
            200: spec.Response("CSV (UTF-8 with a BOM)", spec.TEXT, "text/csv"),
            401: SIGN_IN_AGAIN,
            403: spec.page("Page (nb + en): not the staff member's"),
            404: spec.page("Page (nb + en): no such message"),
        },
    ),
    ("POST", "/staff/signout"): page_post(
        "End every session of the staff member, in every browser",
        FORM_CSRF,
        {
            200: spec.page("Page: signed out"),
            401: spec.page("Page: not signed in"),
            403: BAD_FORM,
        },
    ),
}


def setup(app: web.Application) -> None:
    app[TEXTS] = load_texts(app[CTX].settings.templates_dir, "staff.toml")
    pages = read_pages(app)
    for name in ("pages/staff_message.html", "pages/staff_messages.html"):
        pages.env.get_template(name)  # broken templates stop startup
    app.router.add_post("/v1/staff/{staff_id}/tokens", post_staff_token)
    app.router.add_get("/staff/signin/{token}", sign_in)
    app.router.add_get("/staff/messages", messages_page)
    app.router.add_get("/staff/messages/{id}", message_page)
    app.router.add_get("/staff/messages/{id}/not-reached.csv", not_reached_csv)
    app.router.add_post("/staff/signout", sign_out)
