"""A second Ctrl-C while `mailer send --processes N` waits for its helper processes, and
while `mailer worker --processes N` waits for its other workers.

After the first Ctrl-C the coordinator stops sending and waits for the helpers to finish
what they have in flight. A second Ctrl-C there used to end in a KeyboardInterrupt
traceback (the engine's signal handlers were gone with its event loop). Now it quits at
once as it does while sending: the campaign left paused, a plain message, exit 130. The
waiting runs in a child process (signals, spawn and os._exit need one of their own) with
mailer's own `Children` and a helper that lingers; the campaign is real, in a SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_support import EVENT, SECRET, make_settings, seed_list
from lingering_helper import READY
from mailer.campaigns import lifecycle
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.store import Store

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent

WAITER = """
import sys
from mailer.campaigns.senders import Children
from mailer.cli.send_cmd import _join_or_quit
from mailer.store import Store
from lingering_helper import linger

store = Store.open(sys.argv[1], migrate=False)
children = Children()
children.start(linger, count=1)  # as if asked to stop and slow to finish (no SIGTERM:
# sent now it would end the helper before its interpreter is up to ignore it)
_join_or_quit(children, store, int(sys.argv[2]), timeout=60)
print("joined: the helper ended", flush=True)
"""


def run_script(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`script` in a Python of its own (signals, spawn and os._exit need one), with the
    tests' helpers importable; its stdin, stdout and stderr are pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
            **(env or {}),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def until_it_waits(process: subprocess.Popen[str]) -> str:
    """What it said on stderr up to saying that it waits (and that Ctrl-C quits)."""
    assert process.stderr is not None
    seen = ""
    while "Ctrl-C quits at once" not in seen:
        line = process.stderr.readline()
        assert line, seen
        seen += line
    return seen


def interrupted(process: subprocess.Popen[str], text: str | None = None) -> tuple[str, str]:
    """Ctrl-C, then all it says until it ends (`text` on its stdin first, if any)."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(text, timeout=30)
    finally:
        process.kill()  # still there only if the signal was not heard


def started_campaign(url: str, tmp_path: Path) -> int:
    """A campaign of three, started (sending) by "me"."""
    store = Store.open(url)
    seed_list(store, tmp_path, 3)
    event = load_event(EVENT)
    plan = lifecycle.plan_send(store, event=event, list_name="members", new=False)
    campaign = lifecycle.start_send(store, plan, event=event, event_path=EVENT, owner="me")
    store.close()
    return campaign.id


def test_a_second_ctrl_c_while_helpers_finish_quits_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    campaign_id = started_campaign(url, tmp_path)

    waiter = run_script(WAITER, url, str(campaign_id), cwd=tmp_path)
    seen = until_it_waits(waiter)  # it says what it waits for
    assert "Waiting for the other sender process(es)" in seen
    out, err = interrupted(waiter)
    assert waiter.returncode == 128 + signal.SIGINT.value, err
    assert "SIGINT again: quitting at once; campaign 1 paused" in err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert "joined" not in out

    store = Store.open(url, migrate=False)
    try:
        assert store.campaign_status(campaign_id) is CampaignStatus.PAUSED
    finally:
        store.close()


def test_helpers_that_end_by_themselves_are_waited_for_quietly(tmp_path: Path) -> None:
    """No helper left running: nothing said, nothing paused."""
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    Store.open(url).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    quick = WAITER.replace("children.start(linger, count=1)", "children.start(print, count=1)")
    done = subprocess.run(
        [sys.executable, "-c", quick, url, "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "joined: the helper ended" in done.stdout
    assert "Waiting for" not in done.stderr


WORKER_WAITER = """
from mailer.campaigns.senders import Children
from mailer.cli.schedule_cmd import _join_workers
from lingering_helper import linger

children = Children()
children.start(linger, count=1)  # a worker process slow to finish its messages in flight
_join_workers(children, timeout=60)
print("joined: the other worker ended", flush=True)
"""


def test_a_second_ctrl_c_while_other_workers_finish_quits_at_once(tmp_path: Path) -> None:
    waiter = run_script(WORKER_WAITER, cwd=tmp_path)
    seen = until_it_waits(waiter)
    assert "Waiting for the other worker process(es)" in seen
    out, err = interrupted(waiter)
    assert waiter.returncode == 128 + signal.SIGINT.value, err
    assert "SIGINT again: quitting at once; the other worker process(es) finish" in err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert "joined" not in out


OWN_DRAIN = """
import asyncio
import sys
from mailer.campaigns.senders import Children
from mailer.cli import schedule_cmd

async def finishing_slowly(settings, store, *, stop):
    # a worker whose messages in flight take their time at the relay: until told (stdin)
    print("ready: the signal handlers are in place", flush=True)
    await stop.wait()
    print("stopping: finishing the messages in flight", flush=True)
    await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), 60)

schedule_cmd.run_worker = finishing_slowly
asyncio.run(schedule_cmd._work_with(None, None, Children()))
print("returned: it finished", flush=True)
"""


def own_drain(tmp_path: Path) -> subprocess.Popen[str]:
    """OWN_DRAIN started, its signal handlers in place."""
    worker = run_script(OWN_DRAIN, cwd=tmp_path)
    assert worker.stdout is not None
    assert worker.stdout.readline().startswith("ready"), worker.stderr
    return worker


def test_a_second_ctrl_c_while_the_worker_finishes_its_own_quits_at_once(
    tmp_path: Path,
) -> None:
    """The first Ctrl-C lets the worker finish what it has in flight; a second one, before
    it has, quits at once (it was ignored: the worker went on for up to the relay's
    timeout, saying nothing)."""
    worker = own_drain(tmp_path)
    assert worker.stdout is not None
    worker.send_signal(signal.SIGINT)
    assert worker.stdout.readline().startswith("stopping")  # the first one: finishing
    out, err = interrupted(worker)  # the second
    assert worker.returncode == 128 + signal.SIGINT.value, err
    assert "SIGINT again: quitting at once; what this process had in flight" in err
    assert "Traceback" not in err
    assert "returned" not in out


def test_another_signal_while_the_worker_finishes_does_not_quit(tmp_path: Path) -> None:
    """Ctrl-C, then a SIGTERM (a wrapper forwarding it): still a graceful stop; only the
    same signal again quits at once. Each signal is answered on the terminal."""
    worker = own_drain(tmp_path)
    assert worker.stdout is not None
    assert worker.stderr is not None
    worker.send_signal(signal.SIGINT)
    assert worker.stdout.readline().startswith("stopping")
    assert "SIGINT: finishing the messages in flight" in worker.stderr.readline()
    worker.send_signal(signal.SIGTERM)
    assert "SIGTERM: still finishing the messages in flight" in worker.stderr.readline()
    try:
        out, err = worker.communicate("finish\n", timeout=30)  # the relay answers at last
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "returned: it finished" in out


FAILING_WORKER = """
import asyncio
from mailer.campaigns import senders
from mailer.cli import main, schedule_cmd
from lingering_helper import linger_as_worker, until_a_lingering_process_is_up

async def failing(settings, store, *, stop):
    await until_a_lingering_process_is_up()
    raise TimeoutError()  # an error whose text is empty

senders.worker_main = linger_as_worker  # the other worker process: slow to finish
schedule_cmd.run_worker = failing
main(["worker", "--processes", "2"])
"""


def test_a_ctrl_c_after_the_worker_failed_says_why_it_stopped(tmp_path: Path) -> None:
    """`mailer worker --processes 2` whose own loop fails while the other process still
    finishes: one Ctrl-C quits, says the error first (it was lost), and is not called a
    second one."""
    env = {
        "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'mailer.db'}",
        "MAILER_SECRET_KEY": SECRET,
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        READY: str(tmp_path / "lingering"),
    }
    waiter = run_script(FAILING_WORKER, cwd=tmp_path, env=env)
    until_it_waits(waiter)
    _, err = interrupted(waiter)
    assert waiter.returncode == 128 + signal.SIGINT.value, err
    assert "This worker stopped on an error: TimeoutError" in err
    assert "SIGINT: quitting at once; the other worker process(es) finish" in err
    assert "again:" not in err


FAILING_SEND = """
import sys
from campaign_support import make_settings
from mailer.campaigns import senders
from mailer.cli import send_cmd
from mailer.store import Store
from lingering_helper import linger_as_helper, until_a_lingering_process_is_up
from pathlib import Path

async def failing(*args, **kwargs):
    await until_a_lingering_process_is_up()
    raise RuntimeError("the relay went away")

senders.helper_main = linger_as_helper  # the helper process: slow to finish
send_cmd._run = failing
settings = make_settings(Path(sys.argv[1]), 25)
store = Store.open(settings.database_url, migrate=False)
send_cmd.run_with_signals(store, settings, int(sys.argv[2]), total=3, processes=2)
"""


def test_a_ctrl_c_after_the_send_failed_says_why_it_stopped(tmp_path: Path) -> None:
    """`mailer send --processes 2` whose run fails while the helper still finishes: one
    Ctrl-C quits, pauses the campaign, and says the error first (it was lost)."""
    campaign_id = started_campaign(make_settings(tmp_path, 25).database_url, tmp_path)
    env = {READY: str(tmp_path / "lingering")}
    waiter = run_script(FAILING_SEND, str(tmp_path), str(campaign_id), cwd=tmp_path, env=env)
    until_it_waits(waiter)
    _, err = interrupted(waiter)
    assert waiter.returncode == 128 + signal.SIGINT.value, err
    assert "The send stopped on an error: the relay went away" in err
    assert f"SIGINT: quitting at once; campaign {campaign_id} paused" in err
    assert "again:" not in err
