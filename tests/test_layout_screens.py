"""The example invitations in Chromium (issue 10): the meeting at a venue and the online
reading group, light and dark, phone and desktop widths.

The HTML part is taken from the raw message bytes, shown in headless Chromium at 375 and
800 px in light and dark colour schemes, measured (card width, horizontal overflow,
colours and their contrast) and photographed; the test prints the folder the screenshots
are in. Outlook for Windows cannot run here: its ghost table is checked in the markup.
One Chromium for the module (per xdist worker), a fresh context for each page.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from test_compose import EXAMPLE, SENDER, TEMPLATES, ZOE, make_builder

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
Scheme = Literal["light", "dark"]
ONLINE = TEMPLATES / "events" / "online-reading-group.md"
EVENTS = {"meeting": EXAMPLE, "online": ONLINE}
COLOUR = re.compile(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def invitation_html(event: Path = EXAMPLE) -> str:
    """An event's HTML part, as decoded from the bytes on the wire."""
    message = make_builder(event_path=event).build(ZOE, unsubscribe_url=f"{SENDER.base_url}/u/t7")
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def luminance(css: str) -> float:
    """WCAG relative luminance of a computed `rgb(...)` colour."""
    match = COLOUR.fullmatch(css)
    assert match is not None, css

    def channel(value: str) -> float:
        c = int(value) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(match.group(i)) for i in (1, 2, 3))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_outlook_ghost_table_and_colour_scheme_are_in_the_markup() -> None:
    """Outlook for Windows ignores max-width: a 600 px table only it sees (a conditional
    comment) keeps the card's width; the colour-scheme meta says dark mode is handled."""
    html = invitation_html()
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "@media (prefers-color-scheme: dark)" in html
    ghost = re.search(
        r'<!--\[if mso\]><table role="presentation" width="600".*?<!\[endif\]-->\s*'
        r'<div class="card".*<!--\[if mso\]></td></tr></table><!\[endif\]-->',
        html,
        re.DOTALL,
    )
    assert ghost is not None


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_the_invitation_in_chromium(
    browser: Browser, tmp_path: Path, event: str, scheme: Scheme
) -> None:
    """At 375 and 800 px: the card is 600 px wide on a desktop and fits a phone without
    sideways scrolling; in dark mode backgrounds are dark and text light (not the light
    card a dark-mode reader would be dazzled by); text, links and the button keep WCAG AA
    contrast (4.5:1) in both schemes. The online event's "Join online" button is there,
    on the screen, and leads to the meeting."""
    html = invitation_html(EVENTS[event])
    folder = tmp_path / "screens"
    folder.mkdir()
    print(f"screenshots: {folder}")
    for width in (375, 800):
        context = browser.new_context(
            viewport={"width": width, "height": 900},
            color_scheme=scheme,
            java_script_enabled=False,  # as in a mail client
        )
        page = context.new_page()
        page.set_content(html)
        shot = folder / f"{event}-{width}-{scheme}.png"
        page.screenshot(path=shot, full_page=True)
        card = page.locator(".card")
        box = card.bounding_box()
        assert box is not None
        if width == 800:
            assert box["width"] == 600
        else:
            assert box["width"] <= width
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width

        def style(selector: str, prop: str) -> str:
            return f"getComputedStyle(document.querySelector('{selector}')).{prop}"

        body = page.evaluate(style("body", "backgroundColor"))
        paper = page.evaluate(style(".card", "backgroundColor"))
        text = page.evaluate(style(".card p", "color"))
        title = page.evaluate(style(".card h1", "color"))
        link = page.evaluate(style(".footer a", "color"))
        button = page.evaluate(style(".button", "backgroundColor"))
        label = page.evaluate(style(".button", "color"))
        footer = page.evaluate(style(".footer p", "color"))
        if scheme == "dark":
            assert luminance(body) < 0.02
            assert luminance(paper) < 0.03
            assert luminance(text) > 0.6
        else:
            assert luminance(paper) == 1.0
            assert luminance(text) < 0.02
        for foreground in (text, title, link, footer):
            assert contrast(foreground, paper) >= 4.5, (foreground, paper)
        assert contrast(label, button) >= 4.5
        if event == "online":
            join = page.get_by_role("link", name="Join online")
            assert join.get_attribute("href") == "https://meet.jit.si/cwo-reading-group-chapter-1"
            join_box = join.bounding_box()
            assert join_box is not None
            assert join_box["width"] <= width
        context.close()
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{event}-375-{scheme}.png",
        f"{event}-800-{scheme}.png",
    ]
