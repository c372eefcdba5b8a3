"""The OpenAPI paths of the staff and parent pages (gateway/api/staff_pages.py,
gateway/api/parent_pages.py), for scripts/gen_openapi.py."""

from __future__ import annotations

from typing import Any

REF = "#/components/schemas/{model}"
PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}
CSV = {"content": {"text/csv": {"schema": {"type": "string"}}}}
FORM_CSRF = {
    "type": "object",
    "properties": {"csrf": {"type": "string", "description": "The hidden field of the form"}},
    "required": ["csrf"],
}
PREFERENCES_FORM = {
    "type": "object",
    "properties": {
        "csrf": {"type": "string", "description": "The hidden field of the form"},
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
_CSRF = {"type": "string", "description": "The hidden field of the form"}
ABSENCE_ANSWER_FORM = {
    "type": "object",
    "properties": {"csrf": _CSRF, "kind": _KIND, "text": _TEXT},
    "required": ["csrf", "kind"],
}
ABSENCE_REPORT_FORM = {
    "type": "object",
    "properties": {
        "csrf": _CSRF,
        "kind": _KIND,
        "text": _TEXT,
        "child": {"type": "string", "description": "The child's id"},
        "day": {"type": "string", "description": "Today or tomorrow, YYYY-MM-DD"},
    },
    "required": ["csrf", "kind", "child", "day"],
}
COOKIE_NOTE = " Needs the session cookie a sign-in link sets; a tenant key alone opens no page."


def _param(name: str, description: str, where: str = "path") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": {"type": "string"},
    }


def _responses(codes: dict[str, str]) -> dict[str, Any]:
    """``s200="..."`` -> an HTML page response; a 303 has no body."""
    found: dict[str, Any] = {}
    for code, text in codes.items():
        status = code.removeprefix("s")
        found[status] = {"description": text} if status == "303" else {"description": text, **PAGE}
    return found


def _get(summary: str, description: str, params: list[dict[str, Any]], **codes: str) -> Any:
    responses = _responses(codes)
    return {
        "get": {
            "tags": ["pages"],
            "summary": summary,
            "description": description,
            "security": [],
            "parameters": params,
            "responses": responses,
        }
    }


def _form_post(summary: str, schema: dict[str, Any], **codes: str) -> Any:
    responses: dict[str, Any] = {}
    for code, text in codes.items():
        status = code.removeprefix("s")
        responses[status] = (
            {"description": text} if status == "303" else {"description": text, **PAGE}
        )
    return {
        "tags": ["pages"],
        "summary": summary,
        "security": [],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "multipart/form-data": {"schema": schema},
            },
        },
        "responses": _responses(codes),
    }


def page_paths(errors: Any) -> dict[str, Any]:
    """``errors``: gen_openapi's helper for the JSON error responses."""
    message_id = _param("id", "Message id")
    return {
        "/v1/staff/{staff_id}/tokens": {
            "post": {
                "tags": ["directory"],
                "summary": "A short-lived sign-in link to the staff pages for a staff member",
                "description": (
                    "Opening the link sets a signed, HttpOnly, SameSite session cookie and"
                    " goes to the message (``message_id``) or the message list."
                ),
                "security": [{"bearer": ["directory"]}],
                "parameters": [
                    {
                        "name": "staff_id",
                        "in": "path",
                        "required": True,
                        "description": "Staff member id",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model="StaffLinkRequest")}
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Sign-in link issued",
                        "content": {
                            "application/json": {"schema": {"$ref": REF.format(model="StaffLink")}}
                        },
                    },
                    **errors(401, 403, 404, 413, 422),
                },
            }
        },
        "/staff/signin/{token}": _get(
            "Open a staff sign-in link: set the session cookie, then 303 to the message",
            "The token of `POST /v1/staff/{staff_id}/tokens`.",
            [_param("token", "The sign-in token")],
            s303="Signed in; on to the message or the list",
            s401="Page (nb + en): the link is invalid or has expired",
        ),
        "/staff/messages/{id}": _get(
            "Who one message reached, per child by class, the children not reached first",
            "Why each child was not reached, per guardian the channels and statuses, and who"
            " was left out and why." + COOKIE_NOTE,
            [message_id],
            s200="The page, in the staff member's language",
            s401="Page (nb + en): sign in (again)",
            s403="Page (nb + en): the message is not for the staff member's units or groups",
            s404="Page (nb + en): no such message",
        ),
        "/staff/messages/{id}/not-reached.csv": {
            "get": {
                "tags": ["pages"],
                "summary": "The children not reached, with their guardians' numbers (CSV)",
                "description": "For phoning round." + COOKIE_NOTE,
                "security": [],
                "parameters": [message_id],
                "responses": {
                    "200": {"description": "CSV (UTF-8 with a BOM)", **CSV},
                    "401": {"description": "Page (nb + en): sign in (again)", **PAGE},
                    "403": {"description": "Page (nb + en): not the staff member's", **PAGE},
                    "404": {"description": "Page (nb + en): no such message", **PAGE},
                },
            }
        },
        "/staff/absence": _get(
            "Today's absence alerts and reports for the staff member's groups",
            "The explanations received, and who is still unexplained, first." + COOKIE_NOTE,
            [],
            s200="The page",
            s401="Page (nb + en): sign in (again)",
        ),
        "/staff/contacts": _get(
            "Guardians whose number or email failed for good",
            "So the office can ask for a new one." + COOKIE_NOTE,
            [],
            s200="The page",
            s401="Page (nb + en): sign in (again)",
        ),
        "/staff/messages": _get(
            "The messages a staff member may see, newest first, with their reach",
            "Filtered by category, group and subject; paged with `before`." + COOKIE_NOTE,
            [
                _param("category", "A category, or empty for all", "query"),
                _param("group", "A group id, or empty for all", "query"),
                _param("q", "Words the subject contains", "query"),
                _param("before", "Page: the last message's created_at (ISO 8601)", "query"),
                _param("before_id", "Page: the last message's id", "query"),
            ],
            s200="The list",
            s401="Page (nb + en): sign in (again)",
        ),
        "/staff/signout": {
            "post": _form_post(
                "End the staff session",
                FORM_CSRF,
                s200="Page: signed out",
                s401="Page: not signed in",
                s403="Page: missing or wrong form field",
            )
        },
        "/p/{token}": _get(
            "A message's personal link under /p/: a short parent session, then 303 on",
            "The read link's token. `?to=preferences` goes to the settings, else the inbox.",
            [
                _param("token", "The read link's token (64 characters)"),
                _param("to", "`preferences` for the settings page", "query"),
            ],
            s303="Signed in; on to the inbox or the settings",
            s404="Page (nb + en): the link is invalid or has expired",
            s410="Page (nb + en): the message is gone",
        ),
        "/p/inbox": _get(
            "The guardian's own messages, newest first",
            "Needs the parent session cookie a /p/ link sets.",
            [
                _param("before", "Page: the last message's created_at (ISO 8601)", "query"),
                _param("before_id", "Page: the last message's id", "query"),
            ],
            s200="The inbox",
            s401="Page (nb + en): how to open the pages",
        ),
        "/p/messages/{id}": _get(
            "One message of the inbox: 303 to its read page",
            "Needs the parent session cookie.",
            [message_id],
            s303="On to the read page with a fresh read link",
            s401="Page (nb + en): how to open the pages",
            s404="Page (nb + en): not one of the guardian's messages",
        ),
        "/p/preferences": {
            **_get(
                "Notification settings: channels per category, language, quiet hours",
                "Absence cannot be switched off and emergency always goes everywhere, said"
                " plainly. Needs the parent session cookie.",
                [_param("saved", "`1` after saving: the page says so", "query")],
                s200="The settings form",
                s401="Page (nb + en): how to open the pages",
            ),
            "post": _form_post(
                "Save the settings; they apply from the next message",
                PREFERENCES_FORM,
                s303="Saved; on to the page with ?saved=1",
                s401="Page (nb + en): how to open the pages",
                s403="Page: missing or wrong form field",
                s422="The form again, saying what to correct",
            ),
        },
        "/p/absence": _get(
            "Absence: answer an alert, report an absence for today or tomorrow",
            "Needs the parent session cookie.",
            [_param("done", "`answered` or `reported`: the page says thank you", "query")],
            s200="The page",
            s401="Page (nb + en): how to open the pages",
        ),
        "/p/absence/report": {
            "post": _form_post(
                "Report an absence (as the app's POST /v1/me/absences)",
                ABSENCE_REPORT_FORM,
                s303="Reported; back to the page",
                s401="Page (nb + en): how to open the pages",
                s403="Page: missing or wrong form field",
                s422="The page again, saying what to correct",
            )
        },
        "/p/absence/{id}/answer": {
            "post": {
                **_form_post(
                    "Answer an absence alert (as the app's absence-reply)",
                    ABSENCE_ANSWER_FORM,
                    s303="Answered; back to the page",
                    s401="Page (nb + en): how to open the pages",
                    s403="Page: missing or wrong form field",
                    s404="Page (nb + en): not an alert of the guardian's",
                    s422="The page again, saying what to correct",
                ),
                "parameters": [message_id],
            }
        },
        "/preferences": _get(
            "Settings link of older emails and SMS",
            "With a parent session, on to /p/preferences; without, how to open the pages.",
            [],
            s200="Page (nb + en): how to open the pages",
            s303="On to /p/preferences",
        ),
        "/app": _get(
            "App link of SMS",
            "With a parent session, on to /p/inbox; without, how to open the pages.",
            [],
            s200="Page (nb + en): how to open the pages",
            s303="On to /p/inbox",
        ),
        "/app/messages/{id}": _get(
            "The push notification's `data.link`",
            "With a parent session, on to /p/messages/{id}; without, how to open the pages.",
            [message_id],
            s200="Page (nb + en): how to open the pages",
            s303="On to the message",
        ),
    }
