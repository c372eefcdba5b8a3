"""Screenshots of every page at phone (390 px) and desktop (1280 px) width.

    make screenshots        # or: .venv/bin/python -m scripts.screenshots [--out DIR]

Runs the demo municipality on a gateway of its own (gateway/demo.py), signs in
through a staff sign-in link and a parent link the way a person would, and saves
full-page PNGs into ``screenshots/`` (git-ignored: look at them, do not commit
them). ``--language ar`` gives the guardian's pages and email in Arabic (right to
left), saved as ``<page>-ar-<width>.png`` next to the others. Needs Chromium
(``/usr/bin/chromium``, else Playwright's own).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from gateway.demo import start_demo

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (390, 1280)
CHROMIUM = Path("/usr/bin/chromium")
STAFF = "staff"


def email_html(eml: Path, work: Path) -> str:
    """The demo guardian's email (from the outbox) as an HTML file to open."""
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    part = message.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    html = work / "email.html"
    html.write_text(str(part.get_content()) if part else "", encoding="utf-8")
    return html.as_uri()


async def shoot(out: Path, language: str | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    suffix = f"-{language}" if language else ""
    with tempfile.TemporaryDirectory() as work:
        run = await start_demo(Path(work) / "demo", parent_language=language)
        try:
            links = await run.links()
            url = run.url
            # name -> (sign-in link to open first or "", the page); STAFF: a new staff
            # sign-in link each time (a link works once)
            pages = {
                "staff-message": (STAFF, ""),
                "staff-messages": (STAFF, f"{url}/staff/messages"),
                "staff-absence": (STAFF, f"{url}/staff/absence"),
                "staff-contacts": (STAFF, f"{url}/staff/contacts"),
                "staff-not-signed-in": ("", f"{url}/staff/messages/{run.message_id}"),
                "parent-inbox": (links["parent"], ""),
                "parent-preferences": (links["parent"] + "?to=preferences", ""),
                "parent-absence": (links["parent"], f"{url}/p/absence"),
                "parent-no-session": ("", f"{url}/preferences"),
                "read": ("", links["read"]),
                "unsubscribe": ("", links["unsubscribe"]),
                "email": ("", email_html(Path(links["email"]), Path(work))),
            }
            async with async_playwright() as playwright:
                launch = {"executable_path": str(CHROMIUM)} if CHROMIUM.is_file() else {}
                browser = await playwright.chromium.launch(
                    headless=True, args=["--no-sandbox"], **launch
                )
                try:
                    for width in WIDTHS:
                        for name, (link, page_url) in pages.items():
                            first = await run.staff_link() if link == STAFF else link
                            context = await browser.new_context(
                                viewport={"width": width, "height": 900}
                            )
                            page = await context.new_page()
                            await page.goto(first or page_url)
                            if first and page_url:
                                await page.goto(page_url)
                            path = out / f"{name}{suffix}-{width}.png"
                            await page.screenshot(path=str(path), full_page=True)
                            written.append(path)
                            await context.close()
                finally:
                    await browser.close()
        finally:
            await run.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="where to write")
    parser.add_argument(
        "--language", help="the demo guardian's language (e.g. ar: right to left), in file names"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.language:
        shutil.rmtree(out)
    for path in asyncio.run(shoot(out, args.language)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
