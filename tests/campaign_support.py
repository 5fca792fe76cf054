"""Helpers for campaign tests: settings pointing at a test SMTP server, a seeded list."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from mailer.audience.importer import import_file
from mailer.config import Settings, load_settings
from mailer.sending.run import RunResult, send_campaign_via_smtp
from mailer.store import Store
from mailer.store.signer import load_signer

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT = REPO_ROOT / "templates" / "events" / "london-public-meeting.md"
SECRET = "test-secret-key-0123456789abcdef0123456789"


def make_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'mailer.db'}",
        "var_dir": tmp_path / "var",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout": 5.0,
        "secret_key": SECRET,
        "templates_dir": REPO_ROOT / "templates",
        "from_address": "invitations@cwo.example.org",
        "from_name": "Communist Workers' Organisation",
        "base_url": "https://mailer.example.org",
        "rate_limit": 1000.0,
        "concurrency": 4,
        "retry_delay": 0.2,
        "retry_horizon": 30.0,
        # Long, as the product's default: a sender holds back once half its lease has passed
        # unrenewed, and on a crowded machine (load 6-12 on 2 cores) 1.5 s of a 3 s lease
        # went by in short PostgreSQL sends (LEASE_LOST in test_run_endings,
        # test_campaign_processes, test_relay_pause_retry). The renewal did not wait for a
        # thread (under 20 ms); the process and the database were slow. Tests of expiry
        # pass a short lease of their own.
        "lease_seconds": 30.0,
    }
    values.update(overrides)
    return load_settings(**values)


def seed_list(store: Store, tmp_path: Path, count: int, *, list_name: str = "members") -> list[str]:
    """Import `count` subscribers; returns their addresses in file order."""
    addresses = [f"person{i:05d}@example.org" for i in range(count)]
    path = tmp_path / f"{list_name}.csv"
    lines = ["email,name,city"] + [f"{a},Person {i},London" for i, a in enumerate(addresses)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_file(store, path, list_name=list_name, rejects_path=tmp_path / "rejects.csv")
    return addresses


def new_campaign(store: Store, *, list_name: str = "members") -> int:
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.message.event import load_event

    event = load_event(EVENT)
    choice = start_or_resume(store, event_path=EVENT, event=event, list_name=list_name, new=True)
    return choice.campaign.id


async def send(settings: Settings, store: Store, campaign_id: int, **kwargs: Any) -> RunResult:
    return await send_campaign_via_smtp(
        settings=settings,
        store=store,
        signer=load_signer(settings),
        campaign_id=campaign_id,
        **kwargs,
    )


def cli_environment(tmp_path: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a `mailer` child process: this machine's, without any MAILER_
    variable of the developer's, plus a store and var dir in tmp_path and `settings`
    (MAILER_ names) on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'mailer.db'}",
        MAILER_VAR_DIR=str(tmp_path / "var"),
        MAILER_SMTP_PORT=str(port),
        MAILER_SECRET_KEY=SECRET,
        MAILER_TEMPLATES_DIR=str(REPO_ROOT / "templates"),
        MAILER_FROM_ADDRESS="invitations@cwo.example.org",
        COLUMNS="200",  # Rich wraps at 80 columns without a terminal
    )
    env.update(settings)
    return env


def mailer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailer", *args]


def run_mailer(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mailer ARGS` to completion with no terminal on stdin; the caller checks."""
    return subprocess.run(
        mailer_command(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def answer_at_a_terminal(
    env: dict[str, str], cwd: Path, answer: bytes, *args: str
) -> tuple[int, str]:
    """Run `mailer ARGS` on a real terminal (a pty), wait for its [y/N] question, type
    `answer` and Enter; the exit status and everything the screen showed."""
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        mailer_command(*args), cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    seen = b""
    try:
        while b"[y/N]" not in seen:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, f"no question; the screen so far: {seen!r}"
            seen += os.read(controller, 4096)
        os.write(controller, answer + b"\n")
        status = child.wait(timeout=60)
        while select.select([controller], [], [], 0.5)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    return status, seen.decode("utf-8", "replace")
