"""Built-in files shipped inside the package: message layouts and the web pages' templates."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
BUILTIN_LAYOUTS = ASSETS_DIR / "layouts"
BUILTIN_WEB = ASSETS_DIR / "web"
