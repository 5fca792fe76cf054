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


def test_demo_sends_the_invitation_and_its_link_works_with_mailer_serve(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "subscribers.example.csv", tmp_path)
    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"

    def demo(cwd: Path = tmp_path) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "demo"],
            cwd=cwd,
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
    outbox = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(outbox) == 12
    message = email.message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert message.get_content_type() == "multipart/mixed"
    assert not message.defects
    link = re.search(r"Unsubscribe link: (http://127\.0\.0\.1:8000/u/\S+)", first)
    assert link is not None
    # The signing key is kept in the store, where every later send and server finds it.
    assert not (tmp_path / "var" / "secret_key").exists()

    # Runs again from a subfolder: the same home (found by its var/mailer.db), so the list
    # is already there and a new campaign goes out to the same outbox.
    (tmp_path / "events").mkdir()
    second = demo(tmp_path / "events")
    assert "0 new, 12 already there" in second
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) == 24
    assert not (tmp_path / "events" / "var").exists()

    # The link printed by the demo opens under a `mailer serve` configured with a real key
    # later: the demo's key stays in the store and keeps verifying (issue 9).
    env["MAILER_SECRET_KEY"] = "the-production-key-0123456789abcdef"
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "serve",
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
    assert "Unsubscribe" in page.text
