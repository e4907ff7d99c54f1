"""Headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright, for the report tests.

No browser is downloaded: Playwright is pointed at the system binary. Every request the page makes
is recorded, so tests can check that a report loads nothing but local files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Session:
    """An open page, with the URLs it requested and the script errors it raised."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[Session]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)  # an anti-hang guard, not a performance check
            session = Session(page)
            page.on("request", lambda request: session.requests.append(request.url))
            page.on("pageerror", lambda error: session.errors.append(str(error)))
            page.on(
                "console",
                lambda msg: session.errors.append(msg.text) if msg.type == "error" else None,
            )
            yield session
        finally:
            browser.close()


def open_report(session: Session, html: Path) -> None:
    """Load ``html`` from disk and wait until its script has rendered the first page."""
    session.page.goto(html.resolve().as_uri())
    session.page.wait_for_selector("body[data-ready='1']")


def card_count(session: Session) -> int:
    """The number of inputs the page says match (``#count``: "N of M inputs")."""
    return int(session.page.inner_text("#count").split()[0])
