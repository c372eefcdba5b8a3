"""Staff pages for the day: absence and contact problems.

* ``GET /staff/absence``: today's absence alerts and guardians' reports (today where
  the child's unit is; a report made on an earlier day for today included) for the
  children of the staff member's groups (the office: the unit), the explanations
  received, and who is still unexplained, first.
* ``GET /staff/contacts``: guardians of those children whose number or email failed
  for good (the planner skips it until a re-import brings another one), so the
  office can ask for a new one.

Sign-in, scope and the naming of protected persons are the message pages' own
(gateway/api/staff_pages.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web

from gateway.absence import AbsenceStatus, unit_of
from gateway.api import spec
from gateway.api.context import CTX, AppContext
from gateway.api.pages import CSRF_FIELD, full_name, page_get, read_pages, render, respond, when
from gateway.api.staff_pages import COOKIE_NOTE, SIGN_IN_AGAIN, Namer, Scope, signed_in_staff
from gateway.locales import FSI, PDI
from gateway.models import Audience, DirectorySnapshot, Role
from gateway.planner import local_time
from gateway.pseudonyms import NamesStore, names_for
from gateway.sessions import PageUser
from gateway.store.ports import AbsenceStore

# Today in any time zone (UTC-12 to UTC+14) is the UTC date at one of these offsets.
_ZONE_SPREAD = (timedelta(hours=-12), timedelta(0), timedelta(hours=14))


class _Ports(NamesStore, AbsenceStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _own(text: str) -> str:
    """Someone else's text inside our line, isolated: its direction (Arabic, or a
    direction override a parent typed) stays inside, and the name and time after it
    read as written."""
    return f"{FSI}{text}{PDI}" if text else text


async def _namer(
    ctx: AppContext, staff: PageUser, directory: DirectorySnapshot, person_ids: set[str]
) -> Namer:
    names = await names_for(_store(ctx), ctx.secret, staff.session.tenant_id, person_ids)
    return Namer(directory, names, staff.texts)


def _page(request: web.Request, staff: PageUser, name: str, current: str, **variables: Any) -> str:
    ctx = request.app[CTX]
    t = staff.texts
    return render(
        read_pages(request.app),
        name,
        "../",
        lang=staff.lang,
        t=t,
        wide=True,
        title=t[current],
        current=current,
        signed_in=t["signed_in"].format(name=full_name(staff.person)),
        csrf=staff.session.csrf(ctx.secret),
        csrf_field=CSRF_FIELD,
        **variables,
    )


async def _scope_directory(ctx: AppContext, staff: PageUser) -> DirectorySnapshot:
    """The children of the staff member's groups (the office: of their units), with the
    staff member: what their pages may show, as the contacts page reads it."""
    tenant_id = staff.session.tenant_id
    own = await _store(ctx).load_audience(tenant_id, Audience(staff=[staff.person.id]))
    scope = Scope.of(staff.person, own)
    if not (scope.groups or scope.units):
        return own
    return await _store(ctx).load_audience(
        tenant_id,
        Audience(groups=sorted(scope.groups), units=sorted(scope.units), staff=[staff.person.id]),
    )


async def _todays_absence(
    ctx: AppContext, staff: PageUser
) -> tuple[list[AbsenceStatus], DirectorySnapshot]:
    """The alerts and reports, not cancelled, of the children in the staff member's scope
    whose days include today where the child's unit is (whenever they were reported),
    newest first, with the directory of that scope. The scope is read first: a teacher's
    page reads a class, not every child absent in the municipality."""
    tenant_id, now = staff.session.tenant_id, ctx.clock.now()
    directory = await _scope_directory(ctx, staff)
    scope = Scope.of(staff.person, directory)
    days = sorted({(now + shift).date().isoformat() for shift in _ZONE_SPREAD})
    statuses = []
    for record in await _store(ctx).absences_on(tenant_id, days):
        child = directory.persons.get(record.child_id)
        if record.cancelled_at is not None or child is None or not scope.covers(child):
            continue
        unit = unit_of(directory, record.child_id, record.data.get("unit_id"))
        if local_time(directory, now, unit).date().isoformat() in record.days():
            explanations = await _store(ctx).list_absence_explanations(tenant_id, record.message_id)
            statuses.append(AbsenceStatus(record, explanations))
    return statuses, directory


async def absence_page(request: web.Request) -> web.Response:
    staff = await signed_in_staff(request, "../")
    if isinstance(staff, web.Response):
        return staff
    ctx = request.app[CTX]
    t, lang = staff.texts, staff.lang
    mine, directory = await _todays_absence(ctx, staff)
    namer = await _namer(ctx, staff, directory, set().union(*(s.persons for s in mine)))
    open_rows: list[dict[str, Any]] = []
    done_rows: list[dict[str, Any]] = []
    for status in mine:
        view = status.view(namer)
        lesson = view.get("lesson") or {}
        label = lesson.get("name") or (str(lesson["number"]) if lesson.get("number") else "")
        what = [t["absence_alert"] if view["kind"] == "recorded" else t["absence_report"]]
        if label:
            what.append(t["absence_lesson"].format(lesson=label))
        lines = []
        if view["kind"] == "reported":
            by = view["reported_by"] or ""
            kind = t["kinds"].get(view["reason"] or "other", "")
            text = view["text"] or ""
            at = when(status.record.created_at, lang)
            key = "absence_explained" if text else "absence_explained_short"
            lines.append(t[key].format(kind=kind, text=_own(text), by=_own(by), when=at))
        for e in status.explanations:
            key = "absence_explained" if e.text else "absence_explained_short"
            lines.append(
                t[key].format(
                    kind=t["kinds"][e.kind.value],
                    text=_own(e.text),
                    by=_own(namer(e.person_id)),
                    when=when(e.at, lang),
                )
            )
        if view.get("note"):
            lines.append(t["absence_note"].format(note=_own(view["note"])))
        row = {
            "name": namer(status.record.child_id),
            "group": namer.group(status.record.child_id),
            "what": " · ".join(what),
            "lines": lines,
        }
        explained = view["kind"] == "reported" or status.explanations
        (done_rows if explained else open_rows).append(row)
    html = _page(
        request, staff, "pages/staff_absence.html", "absence", open=open_rows, done=done_rows
    )
    return respond(html)


async def contacts_page(request: web.Request) -> web.Response:
    staff = await signed_in_staff(request, "../")
    if isinstance(staff, web.Response):
        return staff
    ctx = request.app[CTX]
    t = staff.texts
    directory = await _scope_directory(ctx, staff)
    rows = []
    if directory.audience_children:
        failing = {
            pid: kinds
            for pid, kinds in directory.failing.items()
            if pid in directory.persons and directory.persons[pid].role is Role.guardian
        }
        namer = await _namer(ctx, staff, directory, set(failing) | set(directory.audience_children))
        children_of: dict[str, list[str]] = {}
        for relation in directory.relations:
            if relation.guardian_id in failing and relation.child_id in directory.audience_children:
                children_of.setdefault(relation.guardian_id, []).append(relation.child_id)
        for pid, kinds in failing.items():
            if namer.hides(pid):
                continue  # a protected guardian's contact details are not the page's to show
            rows.append(
                {
                    "name": namer(pid),
                    "what": t["contacts_row"].format(
                        kinds=", ".join(t["contact_kinds"].get(k, k) for k in kinds)
                    ),
                    "children": t["contacts_children"].format(
                        children=", ".join(
                            f"{namer(c)} ({namer.group(c)})"
                            for c in sorted(children_of.get(pid, []))
                        )
                    ),
                }
            )
        rows.sort(key=lambda r: r["name"])
    return respond(_page(request, staff, "pages/staff_contacts.html", "contacts", rows=rows))


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/staff/absence"): page_get(
        "Today's absence alerts and reports for the staff member's groups",
        "The explanations received, and who is still unexplained, first." + COOKIE_NOTE,
        (),
        {200: spec.page("The page"), 401: SIGN_IN_AGAIN},
    ),
    ("GET", "/staff/contacts"): page_get(
        "Guardians whose number or email failed for good",
        "So the office can ask for a new one." + COOKIE_NOTE,
        (),
        {200: spec.page("The page"), 401: SIGN_IN_AGAIN},
    ),
}


def setup(app: web.Application) -> None:
    pages = read_pages(app)
    for name in ("pages/staff_absence.html", "pages/staff_contacts.html"):
        pages.env.get_template(name)
    app.router.add_get("/staff/absence", absence_page)
    app.router.add_get("/staff/contacts", contacts_page)
