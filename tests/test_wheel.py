"""The installed package works on its own (issue 9, item 2): a wheel built from this tree,
installed into a fresh virtual environment with no network, previews and sends an event
kept in a folder of its own, run from a third folder, with the layouts and web pages it
ships (src/mailer/assets/)."""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from email import policy
from pathlib import Path

import httpx
import pytest

from campaign_support import EVENT, REPO_ROOT
from smtp_server import SmtpTestServer

pytestmark = pytest.mark.slow

BUILTIN_LINE = "The invitation is also attached as invite.ics"


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding mailer from a wheel; its dependencies come from the test venv.

    The wheel is built from a copy of the tree (pyproject, README, src) with this venv's
    setuptools and no build isolation, so nothing is downloaded. The new venv reads this
    venv's site-packages through a .pth line, which adds that folder to sys.path after its
    own site-packages and does not run the .pth files in it, so the editable install of
    mailer there stays out of sight.
    """
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    dist = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*build, "--no-index", "--wheel-dir", str(dist), str(source)], cwd=root)
    (wheel,) = dist.glob("mailer-*.whl")

    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    run([*install, "--no-deps", "--no-index", "--no-compile", str(wheel)], cwd=root)
    own_site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root
    ).strip()
    (Path(own_site) / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def environment(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILER_", "PYTHON", "COV"))}
    env.update(MAILER_HOME=str(home), COLUMNS="200", **settings)
    return env


def test_the_wheel_imports_mailer_from_the_new_venv(installed: Path) -> None:
    python = str(installed / "bin" / "python")
    code = (
        "import mailer, mailer.assets as a; "
        "print(mailer.__file__); print(sorted(p.name for p in a.BUILTIN_LAYOUTS.iterdir())); "
        "print(sorted(p.name for p in a.BUILTIN_WEB.iterdir()))"
    )
    output = run([python, "-c", code], cwd=installed, env=environment(installed))
    where, layouts, web = output.splitlines()
    assert Path(where).is_relative_to(installed), where  # not the editable install
    assert "'default.html.j2', 'default.txt.j2'" in layouts
    assert "'unsubscribe.html.j2'" in web


def layout_with(folder: Path, marker: str) -> None:
    """A copy of the built-in layout that says `marker` in its HTML."""
    from mailer.assets import BUILTIN_LAYOUTS

    folder.mkdir(parents=True)
    for part in BUILTIN_LAYOUTS.iterdir():
        shutil.copy(part, folder / part.name)
    html = folder / "default.html.j2"
    html.write_text(html.read_text().replace("<h1>", f"<p>{marker}</p><h1>", 1))


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The event in its own folder, the data home, and a third folder to run from."""
    events_home = tmp_path / "campaigns"
    (events_home / "events").mkdir(parents=True)
    event = events_home / "events" / EVENT.name
    shutil.copy(EVENT, event)
    home = tmp_path / "data"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return event, home, elsewhere


def preview_html(mailer: str, event: Path, home: Path, cwd: Path, **settings: str) -> str:
    out = home / "preview"
    csv = str(REPO_ROOT / "subscribers.example.csv")
    run(
        [mailer, "preview", str(event), "--subscribers", csv, "--out", str(out)],
        cwd=cwd,
        env=environment(home, **settings),
    )
    return (out / "london-public-meeting.html").read_text()


def test_preview_resolves_layouts_beside_the_event_then_templates_dir_then_built_in(
    installed: Path, places: tuple[Path, Path, Path]
) -> None:
    event, home, elsewhere = places
    mailer = str(installed / "bin" / "mailer")
    built_in = preview_html(mailer, event, home, elsewhere)
    assert BUILTIN_LINE in built_in

    templates = home / "my-templates"
    layout_with(templates / "layouts", "LAYOUT FROM THE TEMPLATES FOLDER")
    from_templates = preview_html(
        mailer, event, home, elsewhere, MAILER_TEMPLATES_DIR=str(templates)
    )
    assert "LAYOUT FROM THE TEMPLATES FOLDER" in from_templates

    layout_with(event.parent.parent / "layouts", "LAYOUT BESIDE THE EVENT")
    beside = preview_html(mailer, event, home, elsewhere, MAILER_TEMPLATES_DIR=str(templates))
    assert "LAYOUT BESIDE THE EVENT" in beside
    assert "LAYOUT FROM THE TEMPLATES FOLDER" not in beside


def test_the_wheel_sends_and_serves_its_pages(
    installed: Path, places: tuple[Path, Path, Path], smtp_server_thread: SmtpTestServer
) -> None:
    """Import, send through a real SMTP server, then open a link under `mailer serve`:
    the built-in layout in the mail, the built-in web templates on the page."""
    event, home, elsewhere = places
    mailer = str(installed / "bin" / "mailer")
    env = environment(
        home,
        MAILER_SMTP_PORT=str(smtp_server_thread.port),
        MAILER_FROM_ADDRESS="invitations@cwo.example.org",
        MAILER_RATE_LIMIT="500",
    )
    csv = str(REPO_ROOT / "subscribers.example.csv")
    run([mailer, "subscribers", "import", csv, "--list", "members"], cwd=elsewhere, env=env)
    sent = run([mailer, "send", str(event), "--list", "members", "--yes"], cwd=elsewhere, env=env)
    assert "12 sent, 0 deferred, 0 bounced, 0 failed, 0 skipped of 12" in sent
    assert len(smtp_server_thread.messages) == 12
    assert (home / "var" / "mailer.db").is_file()
    assert not (elsewhere / "var").exists()
    message = email.message_from_bytes(smtp_server_thread.messages[0].data, policy=policy.default)
    html = message.get_body(("html",))
    assert html is not None
    assert BUILTIN_LINE in html.get_content()
    found = re.search(r"<https?://[^/>]+(/u/[^>]+)>", str(message["List-Unsubscribe"]))
    assert found is not None

    port_file = elsewhere / "port"
    server = subprocess.Popen(
        [mailer, "serve", "--no-scheduler", "--port", "0", "--port-file", str(port_file)],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert server.poll() is None, "mailer serve exited"
            assert time.monotonic() < deadline, "mailer serve did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text().strip()}"
        page = httpx.get(base + found.group(1), timeout=10)
        stylesheet = httpx.get(base + "/static/style.css", timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert page.status_code == 200
    assert "Unsubscribe" in page.text
    assert stylesheet.status_code == 200
