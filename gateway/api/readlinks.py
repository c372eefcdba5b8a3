"""The read-link page: ``/r/{token}`` from the personal link in an email or SMS.

``GET`` shows the message in the guardian's language and records at most
``opened`` (:func:`gateway.tracker.link_opened`): mail systems' link scanners fetch
links on their own, so a GET never counts as a read. ``POST`` (the confirm button,
with the form's CSRF field) records the read through the tracker
(:func:`gateway.tracker.link_read`: the read, and the delivery itself to ``read``) and
redirects (303) back to the page, which then says thank you. A forged or changed
token, or a message that is gone, gets a friendly page in Bokmål and English and
changes nothing; an expired one (genuine, so it names its delivery) gets it in the
recipient's language, pointing to the newest message's link (:func:`expired_page`).

The page is server-rendered HTML without JavaScript (WCAG 2.1 AA; see
tests/test_read_page_browser.py) and is sent with a strict Content-Security-Policy,
no caching and no referrer (the token is in the URL). Nothing is rate-limited
yet: a token is 2**128 guesses wide, but a proxy limit per client is advisable.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_date, format_time
from babel.lists import format_list
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from gateway import tracker
from gateway.api import spec
from gateway.api.body import read_form
from gateway.api.context import CTX, AppContext
from gateway.attachments import file_rows
from gateway.constants import (
    ABSENCE_CONTEXT_KEY,
    ABSENCE_RECORDED,
    DEFAULT_TIME_ZONE,
    NEUTRAL_KEY,
)
from gateway.errors import ConfigError, LinkExpired, LinkInvalid
from gateway.locales import RTL_LANGUAGES, catalogue_dir, fill, resolve_language
from gateway.locales import load as load_locales
from gateway.models import (
    TERMINAL_FAILURES,
    Category,
    Delivery,
    DeliveryStatus,
    Message,
    Role,
)
from gateway.readlinks import csrf_field, csrf_valid, open_read_token
from gateway.render import Renderer, Reply
from gateway.tracker import ReadStore
from gateway.withdrawal import LINK_GONE, LinkStore, linked_delivery

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
CSS_PATH = "/static/read.css"
CSRF_FIELD = "csrf"
# A provider may call a delivery failed that did arrive (an SMS "undelivered"): its read
# is recorded, but the delivery cannot leave that state, so the page trusts ?done=1.
FAILED = TERMINAL_FAILURES - LINK_GONE

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}


class _Ports(LinkStore, ReadStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


@dataclass(frozen=True)
class ReadPages:
    """The page templates, texts and stylesheet, loaded once at startup."""

    env: Environment
    texts: dict[str, Any]
    css: bytes

    @classmethod
    def load(cls, templates_dir: Path | None, locale_dir: Path | None = None) -> ReadPages:
        """Templates from ``templates_dir``/pages, falling back to the built-in ones; the
        texts of each language from the catalogues (gateway/locales.py)."""
        dirs = [d for d in (templates_dir, DEFAULT_TEMPLATES) if d is not None]
        pages = next((d / "pages" for d in dirs if (d / "pages" / "texts.toml").is_file()), None)
        if pages is None:
            raise ConfigError("templates/pages/texts.toml is missing")
        try:
            texts = tomllib.loads((pages / "texts.toml").read_text(encoding="utf-8"))
            css = (pages / "read.css").read_bytes()
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("templates/pages is incomplete or not valid") from exc
        env = Environment(
            loader=FileSystemLoader([str(d) for d in dirs]),
            autoescape=select_autoescape(enabled_extensions=("html",), default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        env.filters["fill"] = fill
        env.globals["rtl_languages"] = RTL_LANGUAGES
        # Compile now, so a broken template stops startup rather than a guardian's visit.
        for name in ("pages/read.html", "pages/problem.html", "pages/problem_lang.html"):
            env.get_template(name)
        catalogues = load_locales(locale_dir, catalogue_dir(templates_dir))
        return cls(env, texts | catalogues["pages"], css)

    def html(self, name: str, **variables: Any) -> str:
        # From /r/<token>, "../" is the application root even behind a path prefix.
        return self.env.get_template(name).render(static_prefix="../", **variables)


PAGES = web.AppKey("read_pages", ReadPages)


def _respond(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def problem(pages: ReadPages, kind: str, status: int) -> web.Response:
    texts = pages.texts["problems"][kind]
    return _respond(
        pages.html("pages/problem.html", lang="nb", title=texts["nb_title"], p=texts), status
    )


async def token_problem(ctx: AppContext, pages: ReadPages, exc: LinkInvalid) -> web.Response:
    if isinstance(exc, LinkExpired):
        return await expired_page(ctx, pages, exc)
    return problem(pages, "invalid", 404)


async def expired_page(ctx: AppContext, pages: ReadPages, exc: LinkExpired) -> web.Response:
    """410 for a genuine link that has expired (read, parent and unsubscribe links alike):
    in its recipient's language, since the token names the delivery, and pointing to the
    newest message's link rather than an app they may not have; in Bokmål and English
    when the delivery is gone."""
    delivery = await _store(ctx).get_delivery(exc.delivery_id) if exc.delivery_id else None
    if delivery is None:
        return problem(pages, "expired", 410)
    lang = resolve_language(delivery.language)
    t = pages.texts[lang]
    html = pages.html(
        "pages/problem_lang.html",
        lang=lang,
        t=t,
        nav=False,
        title=t["expired_title"],
        text=t["expired_text"],
    )
    return _respond(html, 410)


async def load_delivery(ctx: AppContext, delivery_id: str) -> tuple[Delivery, Message] | None:
    """The delivery a link names and its message, while the link may still show it
    (:func:`gateway.withdrawal.linked_delivery`)."""
    return await linked_delivery(_store(ctx), delivery_id, ctx.clock.now())


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _page_variables(
    pages: ReadPages,
    delivery: Delivery,
    message: Message,
    lang: str,
    renderer: Renderer | None,
    answerable: bool,
) -> dict[str, Any]:
    texts = pages.texts[lang]
    context = delivery.context
    # "Rektor Hansen, Solvang skole", as in the email's header line; none where a
    # protected child is concerned (rule 4: the neutral facts name no school)
    sender = _text(context.get("sender"))
    unit = _text(context.get("unit"))
    sender_line = ", ".join(dict.fromkeys(x for x in (sender, unit) if x)) or None
    if context.get(NEUTRAL_KEY):
        sender_line = None
    names = context.get("children")
    children = [n.strip() for n in names if isinstance(n, str) and n.strip()] if names else []
    # Our own absence text in the recipient's language and facts (neutral ones too), as
    # the SMS and email that brought them here; a staff member's text as written. An
    # alert asks for the answer through the page's link while it waits for one.
    reply: Reply = "link" if answerable else "none"
    own = renderer.own_text(message, delivery, reply=reply) if renderer is not None else None
    subject, body = own if own is not None else (message.subject, message.body)
    if own is None and context.get(NEUTRAL_KEY) and context.get(ABSENCE_CONTEXT_KEY):
        body = ""  # without a renderer: the stored text names the school
    subject = " ".join(subject.split())
    if message.category is Category.emergency:
        subject = f"{texts['important']} {subject}"
    sent_at = message.created_at.astimezone(ZoneInfo(DEFAULT_TIME_ZONE))
    return {
        "lang": lang,
        "t": texts,
        "title": subject,
        "subject": subject,
        "sender": sender_line,
        "children": _names(children, lang) if children else None,
        "sent": texts["sent"].format(
            date=format_date(sent_at, "long", locale=lang),
            time=format_time(sent_at, "short", locale=lang),
        ),
        "body": body.strip(),
    }


def _names(names: list[str], lang: str) -> Markup:
    """ "<bdi>Kari</bdi> og <bdi>Per</bdi>": each name isolated, the list joined by babel
    (CLDR's joiners hold no markup; each name is escaped)."""
    marked = [str(Markup("<bdi>{}</bdi>").format(name)) for name in names]
    return Markup(format_list(marked, locale=lang))


async def _alert_waits_for(ctx: AppContext, message: Message, person_id: str) -> bool:
    """Whether ``message`` is an absence alert still waiting for this person's answer (not
    cancelled, not answered by them): its read page then leads to the answer form."""
    if message.event_type != ABSENCE_RECORDED or ctx.absences is None:
        return False
    status = await ctx.absences.status(message)
    if status is None or status.record.cancelled_at is not None:
        return False
    return all(e.person_id != person_id for e in status.explanations)


async def read_page(request: web.Request) -> web.Response:
    """Show the message; record ``opened`` (never ``read``)."""
    ctx = request.app[CTX]
    pages = request.app[PAGES]
    token = request.match_info["token"]
    now = ctx.clock.now()
    try:
        delivery_id = open_read_token(ctx.secret, token, now)
    except LinkInvalid as exc:
        return await token_problem(ctx, pages, exc)
    found = await load_delivery(ctx, delivery_id)
    if found is None:
        return problem(pages, "gone", 410)
    delivery, message = found
    await tracker.link_opened(_store(ctx), delivery, now)
    lang = resolve_language(delivery.language)
    staff = delivery.recipient_role is Role.staff
    done = request.query.get("done") == "1"
    files = (
        await ctx.attachments.for_message(message.tenant_id, message.id)
        if (ctx.attachments is not None)
        else []
    )
    answerable = not staff and await _alert_waits_for(ctx, message, delivery.recipient_id)
    html = pages.html(
        "pages/read.html",
        **_page_variables(pages, delivery, message, lang, ctx.renderer, answerable),
        # Relative to /r/<token>: <token>/files/<id> (gateway/api/attachments.py).
        files=file_rows(files, f"{token}/files/"),
        token=token,
        csrf=csrf_field(ctx.secret, token),
        read=delivery.status is DeliveryStatus.read or (done and delivery.status in FAILED),
        done=done,
        # The same token under /p/ opens the guardian's own pages (a session of theirs);
        # an absence alert's SMS says "answer via the link": straight to the answer form.
        parent_link=None if staff else f"../p/{token}",
        answer_link=f"../p/{token}?to=absence" if answerable else None,
    )
    return _respond(html)


async def _csrf_value(request: web.Request) -> str | None:
    # A browser says where a form post comes from; refuse another site outright.
    if request.headers.get("Sec-Fetch-Site", "same-origin") == "cross-site":
        return None
    form = await read_form(request)  # a malformed body: 400
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


async def confirm_read(request: web.Request) -> web.StreamResponse:
    """Record the read (the confirm button) and redirect back to the page."""
    ctx = request.app[CTX]
    pages = request.app[PAGES]
    token = request.match_info["token"]
    now = ctx.clock.now()
    try:
        delivery_id = open_read_token(ctx.secret, token, now)
    except LinkInvalid as exc:
        return await token_problem(ctx, pages, exc)
    if not csrf_valid(ctx.secret, token, await _csrf_value(request)):
        return problem(pages, "refused", 403)
    found = await load_delivery(ctx, delivery_id)
    if found is None:
        return problem(pages, "gone", 410)
    delivery, _ = found
    await tracker.link_read(_store(ctx), delivery, now)
    # Relative, like the form's action: right behind a proxy with a path prefix too.
    raise web.HTTPSeeOther(location=f"{token}?done=1", headers=SECURITY_HEADERS)


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[PAGES].css,
        content_type="text/css",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"},
    )


_TOKEN = spec.path("token", "The opaque token of a personal read link (64 base64url characters)")
_INVALID = spec.page("Friendly page (nb + en): the link is forged or changed")
GONE = spec.page(
    "Friendly page: the link has expired (in the recipient's language) or the message is"
    " gone (nb + en)"
)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/r/{token}"): spec.Operation(
        tag="pages",
        summary="Read-link page: the message in the guardian's language",
        description=(
            "Server-rendered HTML with a confirm button. Records at most `opened`"
            " (link scanners fetch links too); never `read`."
        ),
        security=spec.PUBLIC,
        params=(
            _TOKEN,
            spec.query("done", "`1` after a confirmation: the page says thank you"),
        ),
        responses={
            200: spec.page("The message, with the confirm form unless already read"),
            404: _INVALID,
            410: GONE,
        },
    ),
    ("POST", "/r/{token}"): spec.Operation(
        tag="pages",
        summary="Confirm the read (the page's form), then 303 back to the page",
        security=spec.PUBLIC,
        params=(_TOKEN,),
        body=spec.Body(
            {
                "type": "object",
                "properties": {
                    "csrf": {"type": "string", "description": "The hidden field of the page's form"}
                },
                "required": ["csrf"],
            },
            (spec.FORM,),
        ),
        responses={
            303: spec.Response("Read recorded; see `/r/{token}?done=1`"),
            403: spec.page("Friendly page: missing or wrong form field"),
            404: _INVALID,
            410: GONE,
        },
        errors=(400,),
    ),
    ("GET", CSS_PATH): spec.Operation(
        tag="pages",
        summary="Stylesheet of the read-link page",
        security=spec.PUBLIC,
        responses={200: spec.Response("CSS", spec.TEXT, "text/css")},
    ),
}


def setup(app: web.Application) -> None:
    settings = app[CTX].settings
    app[PAGES] = ReadPages.load(settings.templates_dir, settings.locale_dir)
    app.router.add_get("/r/{token}", read_page)
    app.router.add_post("/r/{token}", confirm_read)
    app.router.add_get(CSS_PATH, stylesheet)
