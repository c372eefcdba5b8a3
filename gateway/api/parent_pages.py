"""Parent pages (``/p/...``): an inbox and notification settings for guardians without
the app, reached by the personal link of a message, never by a password.

* ``GET /p/{token}``: the token of a read link (gateway/readlinks.py; the same link
  under ``/r/`` shows the message) opens a short session for the recipient of that
  delivery (a signed, HttpOnly, SameSite cookie) and goes to the inbox, or with
  ``?to=preferences`` to the settings. Emails and SMS carry this as their
  "notification settings" link.
* ``GET /p/inbox``: the guardian's own messages, newest first (``?before=`` pages);
  ``GET /p/messages/{id}`` opens one on the read page with a fresh read link.
* ``GET|POST /p/preferences``: per category the channels (absence cannot be switched
  off, emergency always goes everywhere: said plainly), the language and quiet
  hours. Saved as the guardian's own preferences (an import never overwrites them),
  so they apply from the next message.
* ``GET /p/absence``: answer an absence alert (syk, lege, fri, annet and a text) and
  report an absence for today, tomorrow or (before a weekend) Monday, as the app can
  (gateway/api/absence.py).
* ``/preferences``, ``/app`` and ``/app/messages/{id}`` (the links in older emails and
  SMS, and the push ``data.link``) go to those pages when a session exists, and
  otherwise explain how to open them.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_date
from pydantic import ValidationError

from gateway.api import spec
from gateway.api.absence import AbsenceReply, AbsenceReport, absences, answer_alert, report_absence
from gateway.api.context import CTX, AppContext
from gateway.api.guardian import shown_item
from gateway.api.pages import (
    BAD_FORM,
    CSRF_FIELD,
    CSRF_SCHEMA,
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
from gateway.api.readlinks import SECURITY_HEADERS, expired_page, load_delivery
from gateway.constants import (
    ABSENCE_RECORDED,
    DEFAULT_TIME_ZONE,
    MANDATORY_CATEGORIES,
    SUPPORTED_LANGUAGES,
)
from gateway.errors import Forbidden, LinkExpired, LinkInvalid, NotFound
from gateway.headertext import typed_text
from gateway.locales import language_names, resolve_language
from gateway.models import (
    ID_PATTERN,
    AbsenceKind,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    DigestCategory,
    Preferences,
    Role,
)
from gateway.planner import route
from gateway.readlinks import make_read_token, open_read_token
from gateway.sessions import PARENT_SESSION_SALT, PageUser
from gateway.store.ports import (
    AbsenceStore,
    GuardianStore,
)
from gateway.withdrawal import WithdrawalStore, visible_item, visible_items

PARENT_COOKIE = "budbringer_parent"
INBOX_PAGE = 20
TEXTS = web.AppKey("parent_texts", dict)
# The channels a guardian chooses between; the inbox (in-app) always has the message.
CHOICES = (ChannelName.push, ChannelName.sms, ChannelName.email)
# Categories with a choice; emergency always goes on every channel (gateway/planner.py).
EDITABLE = (Category.general, Category.reminder, Category.confidential, Category.absence)
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# Digits a phone's keyboard may type in another script (Arabic-Indic, Persian), and the
# Norwegian "21.00" for 21:00.
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹٫", "01234567890123456789.")
_LOOSE_TIME = re.compile(r"^(\d{1,2})[.:](\d{2})$")


def clock_time(text: str) -> str:
    """A time of day as typed ("7.30", "٢١:٠٠", "21:00") as HH:MM; as typed when it is
    none (the form then says how to write it)."""
    text = text.strip().translate(_DIGITS)
    found = _LOOSE_TIME.match(text)
    return f"{int(found[1]):02d}:{found[2]}" if found else text


# The categories a guardian may take as a daily digest (gateway/digest_plan.py).
DIGEST_CHOICES: tuple[DigestCategory, ...] = ("general", "reminder")


class _Ports(WithdrawalStore, AbsenceStore, GuardianStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _problem(
    request: web.Request, kind: str, status: int, root: str, parent: PageUser | None = None
) -> web.Response:
    """A problem page: before a session (a broken link) in Bokmål and English, since the
    guardian's language is unknown; inside one, in their language with the pages' menu."""
    if parent is None:
        return problem(read_pages(request.app), request.app[TEXTS]["problems"][kind], status, root)
    t = parent.texts
    html = render(
        read_pages(request.app),
        "pages/problem_lang.html",
        root,
        lang=parent.lang,
        t=t,
        nav=True,
        current="",
        title=t[f"{kind}_title"],
        text=t[f"{kind}_text"],
    )
    return respond(html, status)


async def open_link(request: web.Request) -> web.StreamResponse:
    """A message's personal link under /p/: start a session for its recipient, unless
    the link no longer opens the message either (gone, or access withdrawn: 410)."""
    ctx = request.app[CTX]
    try:
        delivery_id = open_read_token(ctx.secret, request.match_info["token"], ctx.clock.now())
    except LinkExpired as exc:  # not "open the link in the message": that was this one
        return await expired_page(ctx, read_pages(request.app), exc)
    except LinkInvalid:
        return _problem(request, "signin", 404, "../")
    found = await load_delivery(ctx, delivery_id)
    if found is None:
        return _problem(request, "gone", 410, "../")
    delivery, _ = found
    person = await _store(ctx).get_person(delivery.tenant_id, delivery.recipient_id)
    if person is None or person.role is Role.staff:
        return _problem(request, "gone", 410, "../")
    # Where the link was to lead: the settings (an email's footer), an absence alert's
    # answer form (its SMS: "answer via the link"), else the inbox.
    wanted = request.query.get("to")
    target = wanted if wanted in ("preferences", "absence") else "inbox"
    response = web.HTTPSeeOther(location=target, headers=SECURITY_HEADERS)
    ttl = timedelta(seconds=ctx.settings.parent_session_ttl)
    set_session_cookie(
        response, ctx, PARENT_COOKIE, PARENT_SESSION_SALT, (delivery.tenant_id, person.id), ttl, "/"
    )
    raise response


async def _parent(request: web.Request, root: str) -> PageUser | web.Response:
    ctx = request.app[CTX]
    try:
        session = session_from(request, PARENT_COOKIE, PARENT_SESSION_SALT)
    except LinkInvalid:
        return _problem(request, "signin", 401, root)
    person = await _store(ctx).get_person(session.tenant_id, session.person_id)
    if person is None:
        return _problem(request, "signin", 401, root)
    prefs = await _store(ctx).get_preferences(session.tenant_id, person.id)
    lang = resolve_language((prefs.language if prefs else None) or person.language)
    return PageUser(session, person, lang, request.app[TEXTS][lang])


def _page(
    request: web.Request,
    parent: PageUser,
    name: str,
    current: str,
    root: str = "../",
    **variables: Any,
) -> str:
    """A parent page; ``root``: the way back to the application root from the URL it is
    answered at (a form re-rendered at ``/p/absence/report`` is one level deeper)."""
    ctx = request.app[CTX]
    return render(
        read_pages(request.app),
        name,
        root,
        lang=parent.lang,
        t=parent.texts,
        current=current,
        csrf=parent.session.csrf(ctx.secret),
        csrf_field=CSRF_FIELD,
        **variables,
    )


# --------------------------------------------------------------------------- inbox


def _before(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return before_time(raw)
    except ValueError:
        return None


async def inbox(request: web.Request) -> web.Response:
    parent = await _parent(request, "../")
    if isinstance(parent, web.Response):
        return parent
    ctx = request.app[CTX]
    tenant_id, person_id = parent.session.tenant_id, parent.person.id
    before = _before(request.query.get("before"))
    before_id = request.query.get("before_id", "")[:128] or None
    items = await _store(ctx).list_inbox(
        tenant_id,
        person_id,
        limit=INBOX_PAGE,
        before=before,
        before_id=before_id if before is not None else None,
        now=ctx.clock.now(),
    )
    # Items whose access was withdrawn are left out (the cursor follows the store's page),
    # and each is shown as the app shows it (neutral for a protected child or co-guardian).
    visible = await visible_items(_store(ctx), tenant_id, person_id, items, ctx.clock.now())
    shown = [shown_item(item, ctx.renderer) for item in visible]
    rows = [
        {
            "href": f"messages/{item.message_id}",
            "subject": " ".join(item.subject.split()),
            "from": item.sender_name or item.context.get("unit") or "",
            "when": when(item.created_at, parent.lang),
            "unread": item.read_at is None and item.status is not DeliveryStatus.read,
            "files": await _file_count(ctx, tenant_id, item.message_id),
        }
        for item in shown
    ]
    older = None
    if len(items) == INBOX_PAGE:
        last = items[-1]
        older = "inbox?" + urlencode(
            {"before": last.created_at.isoformat(), "before_id": last.message_id}
        )
    title = parent.texts["inbox"]
    unread = sum(1 for row in rows if row["unread"])
    # "3 uleste meldinger", "5 nieprzeczytanych wiadomości": the language's plural rule
    unread_count = parent.texts["unread_count"].format(count=unread) if unread else None
    page = _page(
        request,
        parent,
        "pages/parent_inbox.html",
        "inbox",
        title=title,
        rows=rows,
        older=older,
        unread_count=unread_count,
    )
    return respond(page)


async def _file_count(ctx: AppContext, tenant_id: str, message_id: str) -> int:
    if ctx.attachments is None:
        return 0
    return len(await ctx.attachments.for_message(tenant_id, message_id))


async def message(request: web.Request) -> web.StreamResponse:
    """One message of the inbox, on the read page (a fresh read link of its in-app row)."""
    parent = await _parent(request, "../../")
    if isinstance(parent, web.Response):
        return parent
    ctx = request.app[CTX]
    tenant_id, person_id = parent.session.tenant_id, parent.person.id
    message_id = request.match_info["id"]
    now = ctx.clock.now()
    item = await visible_item(
        _store(ctx), tenant_id, person_id, message_id, now, hide_deferred=True
    )
    stored = await _store(ctx).get_message(tenant_id, message_id) if item else None
    if stored is None:
        return _problem(request, "gone", 404, "../../", parent)
    delivery_id = Delivery.make_id(tenant_id, stored.event_id, person_id, ChannelName.inapp)
    ttl = timedelta(seconds=ctx.settings.parent_session_ttl)
    token = make_read_token(ctx.secret, delivery_id, now + ttl)
    raise web.HTTPSeeOther(location=f"../../r/{token}", headers=SECURITY_HEADERS)


# --------------------------------------------------------------------------- preferences


async def _choices(
    request: web.Request, parent: PageUser, prefs: Preferences | None
) -> dict[str, Any]:
    """What the form offers and what is ticked now (the default routing when the guardian
    has made no choice for a category)."""
    ctx = request.app[CTX]
    devices = await _store(ctx).list_devices(parent.session.tenant_id, parent.person.id)
    person = parent.person
    available = [
        c
        for c in CHOICES
        if (c is ChannelName.push and devices)
        or (c is ChannelName.sms and person.phone)
        or (c is ChannelName.email and person.email)
    ]
    ticked: dict[str, list[str]] = {}
    for category in EDITABLE:
        chosen = prefs.channels.get(category) if prefs is not None else None
        if chosen is None:
            chosen = [r.channel for r in route(person, None, devices, category)]
        ticked[category.value] = [c.value for c in chosen if c in available]
    return {"available": [c.value for c in available], "ticked": ticked}


def _prefs_page(
    request: web.Request,
    parent: PageUser,
    choices: dict[str, Any],
    values: dict[str, str],
    errors: list[str],
    saved: bool,
) -> str:
    return _page(
        request,
        parent,
        "pages/parent_preferences.html",
        "preferences",
        title=parent.texts["preferences"],
        categories=[c.value for c in EDITABLE],
        digest_categories=DIGEST_CHOICES,
        mandatory=sorted(MANDATORY_CATEGORIES),
        languages=list(SUPPORTED_LANGUAGES),
        language_names=language_names(),
        values=values,
        errors=errors,
        saved=saved,
        **choices,
    )


async def preferences_page(request: web.Request) -> web.Response:
    parent = await _parent(request, "../")
    if isinstance(parent, web.Response):
        return parent
    ctx = request.app[CTX]
    prefs = await _store(ctx).get_preferences(parent.session.tenant_id, parent.person.id)
    choices = await _choices(request, parent, prefs)
    values = {
        "language": parent.lang,
        "quiet_start": (prefs.quiet_start if prefs else None) or "",
        "quiet_end": (prefs.quiet_end if prefs else None) or "",
        **{f"digest_{c}": (prefs.digest.get(c) if prefs else None) or "" for c in DIGEST_CHOICES},
    }
    saved = request.query.get("saved") == "1"
    return respond(_prefs_page(request, parent, choices, values, [], saved))


async def save_preferences(request: web.Request) -> web.StreamResponse:
    parent = await _parent(request, "../")
    if isinstance(parent, web.Response):
        return parent
    form = await checked_form(request, parent.session)
    if form is None:
        return _problem(request, "refused", 403, "../", parent)
    ctx = request.app[CTX]
    tenant_id, person_id = parent.session.tenant_id, parent.person.id
    old = await _store(ctx).get_preferences(tenant_id, person_id) or Preferences()
    choices = await _choices(request, parent, old)
    available = set(choices["available"])
    t = parent.texts
    channels: dict[Category, list[ChannelName]] = {}
    for category in EDITABLE:
        picked = form.get(f"ch_{category.value}", [])
        channels[category] = [c for c in CHOICES if c.value in picked and c.value in available]
    errors = []
    if available and any(
        not channels[Category(c)] for c in MANDATORY_CATEGORIES if Category(c) in channels
    ):
        errors.append(t["error_mandatory"])
    language = (form.get("language") or [""])[0]
    start = clock_time((form.get("quiet_start") or [""])[0])
    end = clock_time((form.get("quiet_end") or [""])[0])
    if (start or end) and not (_TIME.match(start) and _TIME.match(end)):
        errors.append(t["error_quiet"])
    digest = {c: clock_time((form.get(f"digest_{c}") or [""])[0]) for c in DIGEST_CHOICES}
    if any(at and not _TIME.match(at) for at in digest.values()):
        errors.append(t["error_digest"])
    if errors:
        choices["ticked"] = {c.value: [x.value for x in channels[c]] for c in EDITABLE}
        values = {"language": language, "quiet_start": start, "quiet_end": end}
        values.update({f"digest_{c}": at for c, at in digest.items()})
        html = _prefs_page(request, parent, choices, values, errors, False)
        return respond(html, 422)
    # absence with nothing but the inbox left is the default routing (never switched off)
    for category, picked_channels in list(channels.items()):
        if not picked_channels and category.value in MANDATORY_CATEGORIES:
            del channels[category]
    if Category.emergency in old.channels:
        channels[Category.emergency] = old.channels[Category.emergency]
    prefs = Preferences(
        language=language if language in SUPPORTED_LANGUAGES else old.language,
        channels=channels,
        quiet_start=start or None,
        quiet_end=end or None,
        digest={c: at for c, at in digest.items() if at},
    )
    await _store(ctx).set_preferences(tenant_id, person_id, prefs)
    raise web.HTTPSeeOther(location="preferences?saved=1", headers=SECURITY_HEADERS)


# --------------------------------------------------------------------------- absence

ALERT_WINDOW = timedelta(days=7)  # alerts this recent can still be answered here
_DONE = {"answered": "absence_answered", "reported": "absence_reported"}


async def _open_alerts(ctx: AppContext, parent: PageUser) -> list[dict[str, str]]:
    """Absence alerts in the guardian's inbox from the last week they have not answered."""
    tenant_id, person_id = parent.session.tenant_id, parent.person.id
    now = ctx.clock.now()
    alerts = []
    listed = await _store(ctx).list_inbox(tenant_id, person_id, limit=50, now=now)
    for found in await visible_items(_store(ctx), tenant_id, person_id, listed, now):
        item = shown_item(found, ctx.renderer)
        if item.category is not Category.absence or item.created_at < now - ALERT_WINDOW:
            continue
        message = await _store(ctx).get_message(tenant_id, item.message_id)
        if message is None or message.event_type != ABSENCE_RECORDED:
            continue
        answers = await _store(ctx).list_absence_explanations(tenant_id, item.message_id)
        if any(a.person_id == person_id for a in answers):
            continue
        alerts.append(
            {
                "id": item.message_id,
                "subject": " ".join(item.subject.split()),
                "when": when(item.created_at, parent.lang),
            }
        )
    return alerts


# Until this hour (Norwegian time) the report form offers today first, after it the next
# school day: a parent reports a sick child in the morning, a dentist's visit the evening
# before, and on a Friday evening or at the weekend, Monday.
TODAY_UNTIL_HOUR = 15
SATURDAY = 5  # date.weekday(): Saturday and Sunday are no school days


def _school_day(day: date) -> date:
    """``day``, or the Monday after it when it falls on a weekend."""
    return day + timedelta(days=7 - day.weekday()) if day.weekday() >= SATURDAY else day


def default_day(now: datetime) -> str:
    """The day the report form has chosen when it opens (ISO date)."""
    local = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE))
    day = local.date() + timedelta(days=0 if local.hour < TODAY_UNTIL_HOUR else 1)
    return _school_day(day).isoformat()


def _days(now: datetime, lang: str, t: dict[str, Any]) -> list[tuple[str, str]]:
    """The days the form offers, as (ISO date, label): today and tomorrow in Norwegian
    time, and the Monday after when tomorrow is a Saturday or a Sunday."""
    today = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date()
    tomorrow = today + timedelta(days=1)
    days = [
        (day.isoformat(), t[key].format(date=format_date(day, "long", locale=lang)))
        for day, key in ((today, "absence_today"), (tomorrow, "absence_tomorrow"))
    ]
    monday = _school_day(tomorrow)
    if monday != tomorrow:
        # "mandag 14. desember 2026": the weekday says why it is offered
        label = format_date(monday, "full", locale=lang)
        days.append((monday.isoformat(), label[:1].upper() + label[1:]))
    return days


async def _absence_html(
    request: web.Request,
    parent: PageUser,
    done: str | None,
    error: str | None,
    root: str = "../",
    typed: dict[str, str] | None = None,
) -> str:
    """The absence page; after a refused form, ``typed``: what the parent chose and wrote
    (an alert's answer has ``alert``, a report ``child``), shown again."""
    ctx = request.app[CTX]
    children = await absences(ctx).children_of(parent.session.tenant_id, parent.person.id)
    return _page(
        request,
        parent,
        "pages/parent_absence.html",
        "absence",
        root,
        typed=typed or {},
        title=parent.texts["absence"],
        alerts=await _open_alerts(ctx, parent),
        children=[(c.id, full_name(c)) for c in children],
        days=_days(ctx.clock.now(), parent.lang, parent.texts),
        checked_day=default_day(ctx.clock.now()),
        kind_values=[k.value for k in AbsenceKind],
        done=done,
        error=error,
    )


async def absence_page(request: web.Request) -> web.Response:
    parent = await _parent(request, "../")
    if isinstance(parent, web.Response):
        return parent
    done_key = _DONE.get(request.query.get("done", ""))
    done = parent.texts[done_key] if done_key else None
    return respond(await _absence_html(request, parent, done, None))


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0].strip()


async def _absence_form(
    request: web.Request, root: str
) -> tuple[PageUser, dict[str, list[str]]] | web.Response:
    parent = await _parent(request, root)
    if isinstance(parent, web.Response):
        return parent
    form = await checked_form(request, parent.session)
    if form is None:
        return _problem(request, "refused", 403, root, parent)
    return parent, form


async def _invalid(
    request: web.Request, parent: PageUser, root: str, typed: dict[str, str]
) -> web.Response:
    """The page again at the form's URL, saying what to choose, with what was typed."""
    error = parent.texts["absence_invalid"]
    return respond(await _absence_html(request, parent, None, error, root, typed), 422)


async def answer_alert_form(request: web.Request) -> web.StreamResponse:
    found = await _absence_form(request, "../../../")
    if isinstance(found, web.Response):
        return found
    parent, form = found
    ctx = request.app[CTX]
    alert_id = request.match_info["id"]
    text = typed_text(_one(form, "text"))[:1000]
    try:
        body = AbsenceReply(kind=AbsenceKind(_one(form, "kind")), text=text)
        await answer_alert(ctx, parent.session.tenant_id, parent.person.id, alert_id, body)
    except (ValueError, ValidationError):
        typed = {"alert": alert_id, "kind": _one(form, "kind"), "text": text}
        return await _invalid(request, parent, "../../../", typed)
    except NotFound:
        return _problem(request, "gone", 404, "../../../", parent)
    raise web.HTTPSeeOther(location="../../absence?done=answered", headers=SECURITY_HEADERS)


async def report_form(request: web.Request) -> web.StreamResponse:
    found = await _absence_form(request, "../../")
    if isinstance(found, web.Response):
        return found
    parent, form = found
    ctx = request.app[CTX]
    allowed = {day for day, _ in _days(ctx.clock.now(), parent.lang, parent.texts)}
    text = typed_text(_one(form, "text"))[:1000]
    try:
        if _one(form, "day") not in allowed:
            raise ValueError("day")
        body = AbsenceReport(
            child_id=_one(form, "child"),
            date=date.fromisoformat(_one(form, "day")),
            kind=AbsenceKind(_one(form, "kind")),
            text=text or None,
        )
        await report_absence(ctx, parent.session.tenant_id, parent.person.id, body)
    except (ValueError, ValidationError, Forbidden):
        typed = {k: _one(form, k) for k in ("child", "day", "kind")} | {"text": text}
        return await _invalid(request, parent, "../../", typed)
    raise web.HTTPSeeOther(location="../absence?done=reported", headers=SECURITY_HEADERS)


# --------------------------------------------------------------------------- old links


async def _to_pages(request: web.Request, target: str, root: str) -> web.StreamResponse:
    """With a parent session, on to the page; without, how to open the pages."""
    try:
        session_from(request, PARENT_COOKIE, PARENT_SESSION_SALT)
    except LinkInvalid:
        return _problem(request, "signin", 200, root)
    raise web.HTTPSeeOther(location=root + target, headers=SECURITY_HEADERS)


async def old_preferences(request: web.Request) -> web.StreamResponse:
    return await _to_pages(request, "p/preferences", "")


async def old_app(request: web.Request) -> web.StreamResponse:
    return await _to_pages(request, "p/inbox", "")


# A message id as the API takes one (gateway/models.py ID_PATTERN), never a path step.
_MESSAGE_ID_FORM = re.compile(ID_PATTERN)


async def old_app_message(request: web.Request) -> web.StreamResponse:
    """The push notification's old ``data.link``: on to that message, or for anything
    that is no message id ("..", "%2F..") to the inbox, never a path built from it."""
    message_id = request.match_info["id"]
    usable = _MESSAGE_ID_FORM.fullmatch(message_id) and message_id not in (".", "..")
    target = f"p/messages/{message_id}" if usable else "p/inbox"
    return await _to_pages(request, target, "../../")


HOW_TO_OPEN = spec.page("Page (nb + en): how to open the pages")
PREFERENCES_FORM = {
    "type": "object",
    "properties": {
        "csrf": CSRF_SCHEMA,
        **{
            f"ch_{category}": {
                "type": "array",
                "items": {"type": "string", "enum": ["push", "sms", "email"]},
                "description": f"The channels for {category} (the inbox always has them)",
            }
            for category in ("general", "reminder", "confidential", "absence")
        },
        "language": {"type": "string", "enum": ["nb", "nn", "en"]},
        "quiet_start": {"type": "string", "description": "HH:MM, or empty"},
        "quiet_end": {"type": "string", "description": "HH:MM, or empty"},
    },
    "required": ["csrf"],
}
_KIND = {"type": "string", "enum": ["sick", "appointment", "leave", "other"]}
_TEXT = {"type": "string", "maxLength": 1000}
ABSENCE_ANSWER_FORM = {
    "type": "object",
    "properties": {"csrf": CSRF_SCHEMA, "kind": _KIND, "text": _TEXT},
    "required": ["csrf", "kind"],
}
ABSENCE_REPORT_FORM = {
    "type": "object",
    "properties": {
        "csrf": CSRF_SCHEMA,
        "kind": _KIND,
        "text": _TEXT,
        "child": {"type": "string", "description": "The child's id"},
        "day": {
            "type": "string",
            "description": "Today, tomorrow or, when tomorrow is a weekend day, the Monday"
            " after; YYYY-MM-DD",
        },
    },
    "required": ["csrf", "kind", "child", "day"],
}
_MESSAGE_ID = spec.path("id", "Message id")
_PAGE_BEFORE = (
    spec.query("before", "Page: the last message's created_at (ISO 8601)"),
    spec.query("before_id", "Page: the last message's id"),
)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/p/inbox"): page_get(
        "The guardian's own messages, newest first",
        "Needs the parent session cookie a /p/ link sets.",
        _PAGE_BEFORE,
        {200: spec.page("The inbox"), 401: HOW_TO_OPEN},
    ),
    ("GET", "/p/preferences"): page_get(
        "Notification settings: channels per category, language, quiet hours",
        "Absence cannot be switched off and emergency always goes everywhere, said"
        " plainly. Needs the parent session cookie.",
        (spec.query("saved", "`1` after saving: the page says so"),),
        {200: spec.page("The settings form"), 401: HOW_TO_OPEN},
    ),
    ("POST", "/p/preferences"): page_post(
        "Save the settings; they apply from the next message",
        PREFERENCES_FORM,
        {
            303: spec.Response("Saved; on to the page with ?saved=1"),
            401: HOW_TO_OPEN,
            403: BAD_FORM,
            422: spec.page("The form again, saying what to correct"),
        },
    ),
    ("GET", "/p/messages/{id}"): page_get(
        "One message of the inbox: 303 to its read page",
        "Needs the parent session cookie.",
        (_MESSAGE_ID,),
        {
            303: spec.Response("On to the read page with a fresh read link"),
            401: HOW_TO_OPEN,
            404: spec.page("Page in the guardian's language: not one of their messages"),
        },
    ),
    ("GET", "/p/absence"): page_get(
        "Absence: answer an alert, report an absence for today, tomorrow or Monday",
        "Needs the parent session cookie.",
        (spec.query("done", "`answered` or `reported`: the page says thank you"),),
        {200: spec.page("The page"), 401: HOW_TO_OPEN},
    ),
    ("POST", "/p/absence/report"): page_post(
        "Report an absence (as the app's POST /v1/me/absences)",
        ABSENCE_REPORT_FORM,
        {
            303: spec.Response("Reported; back to the page"),
            401: HOW_TO_OPEN,
            403: BAD_FORM,
            422: spec.page("The page again, saying what to correct"),
        },
    ),
    ("POST", "/p/absence/{id}/answer"): page_post(
        "Answer an absence alert (as the app's absence-reply)",
        ABSENCE_ANSWER_FORM,
        {
            303: spec.Response("Answered; back to the page"),
            401: HOW_TO_OPEN,
            403: BAD_FORM,
            404: spec.page("Page in the guardian's language: not an alert of theirs"),
            422: spec.page("The page again, saying what to correct"),
        },
        params=(_MESSAGE_ID,),
    ),
    ("GET", "/p/{token}"): page_get(
        "A message's personal link under /p/: a short parent session, then 303 on",
        "The read link's token. `?to=preferences` goes to the settings, `?to=absence` to"
        " the absence page (an alert's answer form), else the inbox.",
        (
            spec.path("token", "The read link's token (64 characters)"),
            spec.query("to", "`preferences` or `absence`"),
        ),
        {
            303: spec.Response("Signed in; on to the inbox, the settings or the absence page"),
            404: spec.page("Page (nb + en): the link is invalid"),
            410: spec.page(
                "Page: the link has expired (in the recipient's language), or the message"
                " is gone (nb + en)"
            ),
        },
    ),
    ("GET", "/preferences"): page_get(
        "Settings link of older emails and SMS",
        "With a parent session, on to /p/preferences; without, how to open the pages.",
        (),
        {200: HOW_TO_OPEN, 303: spec.Response("On to /p/preferences")},
    ),
    ("GET", "/app"): page_get(
        "App link of SMS",
        "With a parent session, on to /p/inbox; without, how to open the pages.",
        (),
        {200: HOW_TO_OPEN, 303: spec.Response("On to /p/inbox")},
    ),
    ("GET", "/app/messages/{id}"): page_get(
        "The push notification's `data.link`",
        "With a parent session, on to /p/messages/{id}; without, how to open the pages.",
        (_MESSAGE_ID,),
        {200: HOW_TO_OPEN, 303: spec.Response("On to the message")},
    ),
}


def setup(app: web.Application) -> None:
    settings = app[CTX].settings
    app[TEXTS] = load_texts(settings.templates_dir, "parent.toml", "parent", settings.locale_dir)
    pages = read_pages(app)
    for name in (
        "pages/parent_inbox.html",
        "pages/parent_preferences.html",
        "pages/parent_absence.html",
    ):
        pages.env.get_template(name)  # broken templates stop startup
    app.router.add_get("/p/inbox", inbox)
    app.router.add_get("/p/preferences", preferences_page)
    app.router.add_post("/p/preferences", save_preferences)
    app.router.add_get("/p/messages/{id}", message)
    app.router.add_get("/p/absence", absence_page)
    app.router.add_post("/p/absence/report", report_form)
    app.router.add_post("/p/absence/{id}/answer", answer_alert_form)
    app.router.add_get("/p/{token}", open_link)
    app.router.add_get("/preferences", old_preferences)
    app.router.add_get("/app", old_app)
    app.router.add_get("/app/messages/{id}", old_app_message)
