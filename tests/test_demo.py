"""`mailer demo`, the main job on embedded defaults, in a fresh folder with no settings."""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import httpx

from campaign_support import REPO_ROOT


def test_demo_sends_the_invitation_in_its_own_store_and_says_what_to_do_next(
    tmp_path: Path,
) -> None:
    """The demo keeps everything in var/demo/ (store, outbox): the organiser's store is
    never opened; its link works under `mailer serve` on the demo's store, as it prints;
    its last lines are the organiser's path (import, write an event, preview, test, send)."""
    shutil.copy(REPO_ROOT / "subscribers.example.csv", tmp_path)
    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"
    real_store = tmp_path / "real" / "mailer.db"
    env["MAILER_DATABASE_URL"] = f"sqlite:///{real_store}"

    def demo() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = demo()
    assert "12 new" in first
    assert "12 sent, 0 deferred, 0 bounced, 0 failed, 0 skipped of 12" in first
    outbox = sorted((tmp_path / "var" / "demo" / "outbox").glob("*.eml"))
    assert len(outbox) == 12
    message = email.message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert message.get_content_type() == "multipart/mixed"
    assert not message.defects
    link = re.search(r"Unsubscribe link: (http://127\.0\.0\.1:8000/u/\S+)", first)
    assert link is not None
    serve_with = re.search(r"To try it: mailer --database-url (\S+) serve --no-scheduler,", first)
    assert serve_with is not None
    assert serve_with.group(1) == "sqlite:///var/demo/demo.db"
    # Nothing of the demo in the organiser's store, nor anywhere else.
    assert not real_store.exists()
    assert not (tmp_path / "var" / "mailer.db").exists()
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["demo"]
    # The signing key is kept in the demo's store, where `mailer serve` on it finds it.
    assert not (tmp_path / "var" / "secret_key").exists()

    last = first.strip().splitlines()[-6:]
    assert last[0].startswith("Next, with your own list")
    steps = [
        "mailer subscribers import members.csv --list members",
        "copy templates/events/london-public-meeting.md, then mailer validate YOUR-EVENT.md",
        "mailer preview YOUR-EVENT.md --list members --open",
        "mailer send YOUR-EVENT.md --list members --test-to you@example.org",
        "mailer send YOUR-EVENT.md --list members",
    ]
    for line, step in zip(last[1:], steps, strict=True):
        assert line.endswith(step), (line, step)

    # Again: the same demo store, so the list is there already; a new campaign goes out.
    second = demo()
    assert "0 new, 12 already there" in second
    assert len(list((tmp_path / "var" / "demo" / "outbox").glob("*.eml"))) == 24
    assert not real_store.exists()

    # The link printed by the demo opens under `mailer serve` as the demo says to run it,
    # even configured with a real key now: the demo's key stays in its store (issue 9).
    env["MAILER_SECRET_KEY"] = "the-production-key-0123456789abcdef"
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "--database-url",
            serve_with.group(1),
            "serve",
            "--no-scheduler",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--no-scheduler",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert time.monotonic() < deadline, "mailer serve did not start"
            time.sleep(0.05)
        url = link.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{port_file.read_text().strip()}")
        page = httpx.get(url, timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert page.status_code == 200
    assert "Unsubscribe from the mailer demo?" in page.text
    assert not real_store.exists()


def test_the_demo_in_a_configured_folder_reaches_nothing_of_the_real_setup(
    tmp_path: Path,
) -> None:
    """A .env with the organiser's signing key, public address, relays and bounce address:
    the demo's links are signed with its own store's key (the real key does not verify
    them, so a real server cannot act on them) and point at a local `mailer serve`; every
    message goes to the embedded catcher (the real relay, here a port nobody answers,
    is never tried) with no VERP sender. Before, the demo's link unsubscribed subscriber 1
    of list 1 on the organiser's real server."""
    from mailer.errors import TokenError
    from mailer.store.keyring import key_bytes
    from mailer.tokens import TokenSigner

    shutil.copy(REPO_ROOT / "subscribers.example.csv", tmp_path)
    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    real_key = "the-organisers-real-key-0123456789abcdef0123"
    (tmp_path / ".env").write_text(
        f"MAILER_SECRET_KEY={real_key}\n"
        "MAILER_BASE_URL=https://lists.leftcom.example\n"
        'MAILER_RELAYS=[{"name": "real", "host": "127.0.0.1", "port": 9}]\n'
        "MAILER_BOUNCE_ADDRESS=bounces@leftcom.example\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "12 sent, 0 deferred, 0 bounced, 0 failed, 0 skipped of 12" in result.stdout
    outbox = sorted((tmp_path / "var" / "demo" / "outbox").glob("*.eml"))
    assert len(outbox) == 12
    message = email.message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert "leftcom" not in str(message["Return-Path"] or "")
    # Nothing left to send later (the example event's reminder), for a `mailer serve`
    # on the demo's store with these settings.
    from mailer.models import CampaignStatus
    from mailer.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'var' / 'demo' / 'demo.db'}") as demo_store:
        waiting = demo_store.campaigns([CampaignStatus.SCHEDULED, CampaignStatus.SENDING])
    assert waiting == []
    link = re.search(r"Unsubscribe link: http://127\.0\.0\.1:8000/u/(\S+)", result.stdout)
    assert link is not None
    try:
        TokenSigner(key_bytes(real_key)).verify_link(link.group(1))
    except TokenError:
        pass
    else:
        raise AssertionError("the organiser's real key verifies the demo's link")
