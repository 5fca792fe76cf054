"""Where an event's layout comes from: beside the event, the templates folder, or built in.

An event file in `some/events/` may bring its own `some/layouts/NAME.html.j2`; otherwise
the organiser's `MAILER_TEMPLATES_DIR/layouts/`, otherwise the layouts shipped inside the
package, so an installed wheel previews and sends an event kept anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailer.assets import BUILTIN_LAYOUTS
from mailer.errors import TemplateError


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    html: Path
    text: Path
    css: Path | None


def layout_folders(event_path: Path, templates_dir: Path) -> list[Path]:
    """The folders searched, first match wins."""
    beside = event_path.resolve().parent.parent / "layouts"
    folders: list[Path] = []
    for folder in (beside, templates_dir / "layouts", BUILTIN_LAYOUTS):
        if folder not in folders:
            folders.append(folder)
    return folders


def available_layouts(folders: list[Path]) -> list[str]:
    names = {p.name.removesuffix(".html.j2") for f in folders for p in f.glob("*.html.j2")}
    return sorted(names)


def find_layout(name: str, *, event_path: Path, templates_dir: Path) -> Layout:
    """The first folder holding `NAME.html.j2`; both parts must be there."""
    folders = layout_folders(event_path, templates_dir)
    for folder in folders:
        html = folder / f"{name}.html.j2"
        if html.is_file():
            text = folder / f"{name}.txt.j2"
            if not text.is_file():
                raise TemplateError(f"layout {name!r} has no text part", path=text)
            css = folder / f"{name}.css"
            return Layout(name, html, text, css if css.is_file() else None)
    known = ", ".join(available_layouts(folders)) or "none"
    raise TemplateError(
        f"layout {name!r} not found (layouts: {known})",
        path=event_path,
        hint="Searched " + ", ".join(str(f) for f in folders) + ".",
    )
