"""One-click unsubscribe from email (RFC 8058): ``/u/{token}``.

Every email carries ``List-Unsubscribe: <{public_url}/u/{token}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the token is the email's
read-link token (gateway/readlinks.py), so it names one delivery and through it
the recipient and the message's category.

* ``POST`` with the body ``List-Unsubscribe=One-Click`` (what a mail provider
  sends for its unsubscribe button; no CSRF field, as RFC 8058 specifies), or
  from the page's own form with its CSRF field: stop email for that category.
  The recipient's preferences (source guardian, so an import never undoes it)
  keep the category's other channels; without a choice for the category, the
  channels its default routing uses for the recipient now, less email.
  Absence and emergency alerts cannot be switched off: nothing changes and the
  page says so. Answers 200 with a page; a repeated POST changes nothing more.
* ``GET`` shows what the button will do, and changes nothing (link scanners
  fetch links on their own).

A forged, changed or expired token, or a message that is gone, gets a friendly
page and changes nothing. Pages reuse the read page's layout and stylesheet,
security headers included, in the recipient's language (templates/locale).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gateway.api import spec
from gateway.api.body import read_form
from gateway.api.context import CTX, AppContext
from gateway.api.pages import read_pages
from gateway.api.readlinks import (
    CSRF_FIELD,
    DEFAULT_TEMPLATES,
    GONE,
    PAGES,
    SECURITY_HEADERS,
    ReadPages,
    expired_page,
)
from gateway.constants import MANDATORY_CATEGORIES
from gateway.errors import ConfigError, LinkExpired, LinkInvalid
from gateway.locales import catalogue_dir, fill, resolve_language
from gateway.locales import load as load_locales
from gateway.models import Category, ChannelName, Delivery, Message, Person, Preferences
from gateway.planner import route
from gateway.readlinks import PARENT_PATH, csrf_field, csrf_valid, open_read_token
from gateway.store.ports import AudienceReader, DeliveryStore, GuardianStore, MessageStore

log = logging.getLogger(__name__)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
TEMPLATE = "pages/unsubscribe.html"


class _Ports(AudienceReader, DeliveryStore, GuardianStore, MessageStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


@dataclass(frozen=True)
class UnsubscribePages:
    """The read pages' templates plus the texts of this page, loaded once at startup."""

    pages: ReadPages
    texts: dict[str, Any]

    @classmethod
    def load(
        cls, pages: ReadPages, templates_dir: Path | None, locale_dir: Path | None = None
    ) -> UnsubscribePages:
        dirs = [d for d in (templates_dir, DEFAULT_TEMPLATES) if d is not None]
        found = next((d / "pages" / "unsubscribe.toml" for d in dirs if _has_texts(d)), None)
        if found is None:
            raise ConfigError("templates/pages/unsubscribe.toml is missing")
        try:
            texts = tomllib.loads(found.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("templates/pages/unsubscribe.toml is not valid") from exc
        pages.env.get_template(TEMPLATE)  # a broken template stops startup, not a visit
        catalogues = load_locales(locale_dir, catalogue_dir(templates_dir))
        return cls(pages, texts | catalogues["unsubscribe"])

    def problem(self, kind: str, status: int) -> web.Response:
        texts = self.texts["problems"][kind]
        html = self.pages.html("pages/problem.html", lang="nb", title=texts["nb_title"], p=texts)
        return _respond(html, status)

    def page(
        self, message: Message, lang: str, state: str, token: str, **variables: Any
    ) -> web.Response:
        """``state``: confirm (the form), done (email is off) or mandatory (cannot be).
        Every state links to the recipient's notification settings (/p/, the same token)."""
        t = self.texts[lang]
        category = t["categories"][message.category.value]
        heading = {
            "confirm": t["confirm_heading"],
            "done": t["done_heading"],
            "mandatory": t["mandatory_heading"],
        }[state].format(category=category)
        text = {"done": t["done"], "mandatory": t["mandatory"]}.get(state, "")
        html = self.pages.html(
            TEMPLATE,
            lang=lang,
            t=t,
            title=t["title"],
            heading=heading[:1].upper() + heading[1:],
            about=fill(t["about"], subject=" ".join(message.subject.split())),
            state=state,
            text=text.format(category=category),
            token=token,
            preferences_href=f"..{PARENT_PATH}{token}?to=preferences",
            **variables,
        )
        return _respond(html)


def _respond(html: str, status: int = 200) -> web.Response:
    return web.Response(
        text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def _has_texts(templates_dir: Path) -> bool:
    return (templates_dir / "pages" / "unsubscribe.toml").is_file()


UNSUBSCRIBE_PAGES = web.AppKey("unsubscribe_pages", UnsubscribePages)


@dataclass(frozen=True)
class _Target:
    delivery: Delivery
    message: Message
    person: Person
    lang: str


async def _target(request: web.Request, token: str) -> _Target | web.Response:
    """What the token points at, or the problem page to answer with."""
    ctx, pages = request.app[CTX], request.app[UNSUBSCRIBE_PAGES]
    try:
        delivery_id = open_read_token(ctx.secret, token, ctx.clock.now())
    except LinkExpired as exc:  # in the guardian's language, as the read link's
        return await expired_page(ctx, read_pages(request.app), exc)
    except LinkInvalid:
        return pages.problem("invalid", 404)
    delivery = await _store(ctx).get_delivery(delivery_id)
    if delivery is None:
        return pages.problem("gone", 410)
    if delivery.channel != ChannelName.email:
        return pages.problem("invalid", 404)  # a read link from an SMS is no unsubscribe link
    message = await _store(ctx).get_message(delivery.tenant_id, delivery.message_id)
    if message is None:
        return pages.problem("gone", 410)
    person = await _store(ctx).get_person(delivery.tenant_id, delivery.recipient_id)
    if person is None:
        return pages.problem("gone", 410)
    return _Target(delivery, message, person, resolve_language(delivery.language))


def email_off(prefs: Preferences | None, category: Category) -> bool:
    """True when the preferences already keep email out of this category."""
    chosen = None if prefs is None else prefs.channels.get(category)
    return chosen is not None and ChannelName.email not in chosen


async def without_email(ctx: AppContext, target: _Target) -> Preferences:
    """The recipient's preferences with email taken out of the message's category."""
    tenant_id, person = target.delivery.tenant_id, target.person
    category = target.message.category
    prefs = await _store(ctx).get_preferences(tenant_id, person.id) or Preferences()
    chosen = prefs.channels.get(category)
    if chosen is None:
        # No choice for the category yet: what its default routing gives this person
        # today becomes the choice (push if the app is installed, else SMS), less email.
        devices = await _store(ctx).list_devices(tenant_id, person.id)
        chosen = [r.channel for r in route(person, None, devices, category)]
    kept = [ChannelName(c) for c in dict.fromkeys(chosen) if c != ChannelName.email]
    return prefs.model_copy(update={"channels": {**prefs.channels, category: kept}})


async def unsubscribe_page(request: web.Request) -> web.Response:
    """Show what the button does; change nothing."""
    ctx = request.app[CTX]
    pages = request.app[UNSUBSCRIBE_PAGES]
    token = request.match_info["token"]
    target = await _target(request, token)
    if isinstance(target, web.Response):
        return target
    message, lang = target.message, target.lang
    if message.category.value in MANDATORY_CATEGORIES:
        return pages.page(message, lang, "mandatory", token)
    prefs = await _store(ctx).get_preferences(target.delivery.tenant_id, target.person.id)
    if email_off(prefs, message.category):
        return pages.page(message, lang, "done", token)
    return pages.page(message, lang, "confirm", token, csrf=csrf_field(ctx.secret, token))


async def _allowed(request: web.Request, ctx: AppContext, token: str) -> bool:
    """A one-click POST (RFC 8058: no CSRF field, from anywhere) or our own form's POST
    (its CSRF field, and not from another site)."""
    form = await read_form(request)  # a malformed body: 400
    if form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE:
        return True
    if request.headers.get("Sec-Fetch-Site", "same-origin") == "cross-site":
        return False
    value = form.get(CSRF_FIELD)
    return csrf_valid(ctx.secret, token, value if isinstance(value, str) else None)


async def unsubscribe(request: web.Request) -> web.Response:
    """Stop email for the message's category (not for absence and emergency)."""
    ctx = request.app[CTX]
    pages = request.app[UNSUBSCRIBE_PAGES]
    token = request.match_info["token"]
    target = await _target(request, token)
    if isinstance(target, web.Response):
        return target
    if not await _allowed(request, ctx, token):
        return pages.problem("refused", 403)
    message, lang = target.message, target.lang
    if message.category.value in MANDATORY_CATEGORIES:
        return pages.page(message, lang, "mandatory", token)
    tenant_id = target.delivery.tenant_id
    prefs = await without_email(ctx, target)
    await _store(ctx).set_preferences(tenant_id, target.person.id, prefs)
    log.info(
        "email switched off by unsubscribe link",
        extra={"tenant_id": tenant_id, "category": message.category.value},
    )
    return pages.page(message, lang, "done", token)


_TOKEN = spec.path(
    "token", "The token of the email's personal link (the read link's, 64 characters)"
)
_INVALID = spec.page("Friendly page (nb + en): forged link, or not an email's")
_FORM = {
    "type": "object",
    "properties": {
        "List-Unsubscribe": {
            "type": "string",
            "enum": ["One-Click"],
            "description": "RFC 8058 one-click: what a mail provider posts",
        },
        "csrf": {"type": "string", "description": "The hidden field of the page's form"},
    },
}
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/u/{token}"): spec.Operation(
        tag="pages",
        summary="Unsubscribe page: asks before switching email off",
        description=(
            "Server-rendered HTML in the recipient's language with a confirm button;"
            " changes nothing (link scanners fetch links too)."
        ),
        security=spec.PUBLIC,
        params=(_TOKEN,),
        responses={
            200: spec.page("The question, or what is already so"),
            404: _INVALID,
            410: GONE,
        },
    ),
    ("POST", "/u/{token}"): spec.Operation(
        tag="pages",
        summary="Stop email for the message's category (RFC 8058 one-click)",
        description=(
            "The target of `List-Unsubscribe` with `List-Unsubscribe-Post:"
            " List-Unsubscribe=One-Click`. Takes the one-click body (no CSRF field)"
            " or the page's form with its CSRF field. Email leaves the category in the"
            " recipient's preferences; absence and emergency alerts cannot be switched"
            " off, so nothing changes for them and the page says so."
        ),
        security=spec.PUBLIC,
        params=(_TOKEN,),
        body=spec.form(_FORM),
        responses={
            200: spec.page("Done (or: cannot be switched off by email)"),
            403: spec.page("Friendly page: neither one-click nor the form"),
            404: _INVALID,
            410: GONE,
        },
        errors=(400,),
    ),
}


def setup(app: web.Application) -> None:
    settings = app[CTX].settings
    pages = app.get(PAGES)
    if pages is None:  # the read-link module normally loads them first
        pages = app[PAGES] = ReadPages.load(settings.templates_dir, settings.locale_dir)
    app[UNSUBSCRIBE_PAGES] = UnsubscribePages.load(
        pages, settings.templates_dir, settings.locale_dir
    )
    app.router.add_get("/u/{token}", unsubscribe_page)
    app.router.add_post("/u/{token}", unsubscribe)
