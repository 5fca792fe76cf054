"""Scheduled sends with `mailer worker` as a real subprocess and real SMTP servers. The
set-up commands (import, schedule, cancel, reschedule, list) run mailer.cli.main in the
test process (tests/cli_support.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign_support import EVENT, cli_environment, mailer_command
from cli_support import run_mailer_here
from mailer.models import CampaignStatus
from mailer.store import Store
from smtp_server import SmtpServerProcess

pytestmark = pytest.mark.slow


def environment(database_url: str, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    settings = {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_RATE_LIMIT": "500",
        "MAILER_POLL_INTERVAL": "0.2",
        "MAILER_LEASE_SECONDS": "3",
    }
    return cli_environment(tmp_path, port, **{**settings, **extra})


def mailer(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_mailer_here(env, cwd, *args)
    assert result.returncode == 0, result.stderr
    return result


@contextmanager
def worker(env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            mailer_command("worker"),
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)


def seed(env: dict[str, str], tmp_path: Path, count: int, list_name: str = "members") -> list[str]:
    addresses = [f"{list_name}{i:04d}@example.org" for i in range(count)]
    path = tmp_path / f"{list_name}.csv"
    path.write_text("email,name\n" + "".join(f"{a},Member {i}\n" for i, a in enumerate(addresses)))
    mailer(env, tmp_path, "subscribers", "import", str(path), "--list", list_name)
    return addresses


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def due_in(database_url: str, campaign_id: int, seconds: float) -> datetime:
    """Move a campaign scheduled far ahead (by the CLI) to `seconds` from now, in process.

    Scheduling a few seconds ahead through the CLI fails on a loaded machine: the child
    process may take longer to start than the margin, and `--at` is then in the past."""
    from mailer.campaigns import lifecycle

    when = datetime.now(UTC) + timedelta(seconds=seconds)
    with Store.open(database_url) as store:
        lifecycle.reschedule(store, campaign_id, when)
    return when


def finished(
    env: dict[str, str] | None = None, campaign_id: int = 1, *, database_url: str = ""
) -> bool:
    with Store.open(database_url or (env or {})["MAILER_DATABASE_URL"]) as store:
        return store.get_campaign(campaign_id).status is CampaignStatus.FINISHED


def received(server: SmtpServerProcess) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_scheduled_campaign_goes_out_when_due_and_not_before(
    tmp_path: Path, smtp_server_process: SmtpServerProcess
) -> None:
    env = environment(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, smtp_server_process.port)
    addresses = seed(env, tmp_path, 20)
    out = mailer(
        env,
        tmp_path,
        "schedule",
        str(EVENT),
        "--list",
        "members",
        "--at",
        at(3600),
        "--tz",
        "UTC",
        "--yes",
    ).stdout
    assert "Campaign 1 scheduled for" in out
    due = due_in(env["MAILER_DATABASE_URL"], 1, 1.5)
    with worker(env, tmp_path, tmp_path / "worker.log"):
        wait_until(lambda: len(received(smtp_server_process)) == 20, 20, "the send")
        first_arrival = min(p.stat().st_mtime for p in smtp_server_process.record_dir.glob("*.eml"))
        assert first_arrival >= due.timestamp()
        # All 20 are at the server; the worker records them before it may be stopped.
        wait_until(lambda: "event=finished" in (tmp_path / "worker.log").read_text(), 20, "log")
    assert set(received(smtp_server_process)) == set(addresses)
    log = (tmp_path / "worker.log").read_text()
    assert "campaign=1 event=finished status=finished sent=20" in log
    assert "event=worker-stopped" in log


def test_cancelled_and_rescheduled_campaigns(
    tmp_path: Path, smtp_server_process: SmtpServerProcess
) -> None:
    env = environment(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, smtp_server_process.port)
    seed(env, tmp_path, 5, "early")
    late = seed(env, tmp_path, 5, "late")
    mailer(
        env, tmp_path, "schedule", str(EVENT), "-l", "early", "--at", at(60), "--tz", "UTC", "-y"
    )
    mailer(
        env, tmp_path, "schedule", str(EVENT), "-l", "late", "--at", at(3600), "--tz", "UTC", "-y"
    )
    mailer(env, tmp_path, "campaign", "cancel", "1", "--yes")
    moved = mailer(env, tmp_path, "campaign", "reschedule", "2", "--at", at(7200), "--tz", "UTC")
    assert "Campaign 2 rescheduled for" in moved.stdout
    due_in(env["MAILER_DATABASE_URL"], 2, 0.5)
    with worker(env, tmp_path, tmp_path / "worker.log"):
        wait_until(lambda: len(received(smtp_server_process)) == 5, 20, "the rescheduled send")
        wait_until(lambda: finished(env, 2), 20, "the campaign to be recorded finished")
    assert set(received(smtp_server_process)) == set(late)
    listing = mailer(env, tmp_path, "campaign", "list").stdout
    assert "cancelled" in listing
    assert "finished" in listing


def test_worker_killed_mid_campaign_and_restarted_sends_each_once(tmp_path: Path) -> None:
    with SmtpServerProcess(tmp_path / "received") as server:
        env = environment(
            f"sqlite:///{tmp_path / 'm.db'}", tmp_path, server.port, MAILER_RATE_LIMIT="100"
        )
        addresses = seed(env, tmp_path, 300)
        mailer(
            env,
            tmp_path,
            "schedule",
            str(EVENT),
            "-l",
            "members",
            "--at",
            at(3600),
            "--tz",
            "UTC",
            "-y",
        )
        due_in(env["MAILER_DATABASE_URL"], 1, 0.5)
        with worker(env, tmp_path, tmp_path / "first.log") as first:
            wait_until(lambda: len(received(server)) >= 60, 30, "the first worker to send")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert len(received(server)) < 300
        with worker(env, tmp_path, tmp_path / "second.log"):
            # Finished, whatever the outcome of the few messages in flight at the kill
            # (`unknown` rows are not resent; the assertions below count the server).
            store = Store.open(env["MAILER_DATABASE_URL"])
            wait_until(
                lambda: store.get_campaign(1).status is CampaignStatus.FINISHED,
                60,
                "the second worker to finish",
            )
            store.close()
            time.sleep(0.5)
        counts = received(server)
    assert set(counts) == set(addresses)
    assert max(counts.values()) == 1


def test_two_workers_on_one_store_send_each_once(
    tmp_path: Path, database_url: str, smtp_server_process: SmtpServerProcess
) -> None:
    """Started together on the same store (SQLite file or PostgreSQL): one claims it."""
    env = environment(database_url, tmp_path, smtp_server_process.port)
    addresses = seed(env, tmp_path, 80)
    mailer(
        env,
        tmp_path,
        "schedule",
        str(EVENT),
        "-l",
        "members",
        "--at",
        at(3600),
        "--tz",
        "UTC",
        "-y",
    )
    due_in(database_url, 1, 0.5)
    with worker(env, tmp_path, tmp_path / "a.log"), worker(env, tmp_path, tmp_path / "b.log"):
        wait_until(lambda: len(received(smtp_server_process)) >= 80, 30, "the send")
        wait_until(lambda: finished(database_url=database_url), 30, "the campaign to finish")
    counts = received(smtp_server_process)
    assert set(counts) == set(addresses)
    assert max(counts.values()) == 1
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert logs.count("campaign=1 event=finished") == 1


def test_campaign_past_its_grace_period_is_marked_missed(
    tmp_path: Path, smtp_server_process: SmtpServerProcess
) -> None:
    database = f"sqlite:///{tmp_path / 'm.db'}"
    env = environment(database, tmp_path, smtp_server_process.port, MAILER_GRACE_PERIOD="60")
    seed(env, tmp_path, 3)
    store = Store.open(database)
    from mailer.message.event import load_event

    event = load_event(EVENT)
    list_id = store.list_id("members")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    just_now = datetime.now(UTC) - timedelta(seconds=20)
    for when in (long_ago, just_now):
        store.create_campaign(
            event_path=str(EVENT),
            event_slug=event.slug,
            list_id=list_id,
            subject=event.subject,
            status=CampaignStatus.SCHEDULED,
            scheduled_at=when,
        )
    with worker(env, tmp_path, tmp_path / "worker.log"):
        wait_until(
            lambda: store.get_campaign(2).status is CampaignStatus.FINISHED,
            20,
            "the late-but-within-grace campaign",
        )
    assert store.get_campaign(1).status is CampaignStatus.MISSED
    assert "missed" in (store.get_campaign(1).last_error or "")
    assert len(received(smtp_server_process)) == 3
    assert "campaign=1 event=missed" in (tmp_path / "worker.log").read_text()
    store.close()
