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
    outbox = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(outbox) == 12
    message = email.message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert message.get_content_type() == "multipart/mixed"
    assert not message.defects
    link = re.search(r"Unsubscribe link: (http://127\.0\.0\.1:8000/u/\S+)", first)
    assert link is not None
    assert (tmp_path / "var" / "secret_key").exists()  # generated once, kept under var/

    second = demo()  # runs again: the list is already there, a new campaign goes out
    assert "0 new, 12 already there" in second
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) == 24

    # The link printed by the demo opens the page under `mailer serve` (same var/ key).
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
