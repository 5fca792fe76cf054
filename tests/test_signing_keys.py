"""Signing keys live in the store: every send and every server on one store agree, and no
key change silently breaks links already sent (issue 9, item 3)."""

from __future__ import annotations

import email
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from email import policy
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from campaign_support import EVENT, REPO_ROOT, cli_environment, mailer_command
from cli_support import run_mailer_here
from mailer.config import Settings
from mailer.errors import ConfigError, TokenError
from mailer.store import Store
from mailer.store.keyring import (
    KEY_REFRESH_INTERVAL,
    KeyOrigin,
    SigningKey,
    StoreKeySigner,
    key_id,
    load_keyring,
)
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner, UnsubscribeClaims
from smtp_server import SmtpTestServer

KEY_A = "configured-key-A-0123456789abcdef"
KEY_B = "configured-key-B-0123456789abcdef"


def settings_for(
    tmp_path: Path,
    database_url: str,
    *,
    secret_key: str | SecretStr | None = None,
    secret_key_fallbacks: Sequence[str | SecretStr] = (),
) -> Settings:
    return Settings(
        database_url=database_url,
        var_dir=tmp_path / "var",
        secret_key=secret_key,
        secret_key_fallbacks=list(secret_key_fallbacks),
    )


# -- load_signer on a store -----------------------------------------------------------------


def test_without_a_configured_key_the_store_makes_one_and_keeps_it(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    settings = settings_for(tmp_path, database_url)
    token = load_signer(settings, store=store).sign(subscriber_id=5, list_id=6)
    (recorded,) = store.signing_keys()
    assert recorded.origin is KeyOrigin.GENERATED
    assert TokenSigner(recorded.secret.encode()).verify(token) == UnsubscribeClaims(5, 6, None)
    # A later process (say `mailer serve`) signs and verifies with the same key.
    again = load_signer(settings, store=store)
    assert again.sign(subscriber_id=5, list_id=6) == token
    assert [k.key_id for k in store.signing_keys()] == [recorded.key_id]
    assert not (tmp_path / "var").exists()  # nothing under var/ any more


def test_links_signed_by_any_key_verify_under_any_later_configuration(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    """The issue: a send without MAILER_SECRET_KEY, a send with key A, then a server with
    key B and no fallbacks: every link still opens, and new links are signed with B."""
    unset = load_signer(settings_for(tmp_path, database_url), store=store)
    by_store_key = unset.sign(subscriber_id=1, list_id=1)
    with_a = load_signer(settings_for(tmp_path, database_url, secret_key=KEY_A), store=store)
    by_a = with_a.sign(subscriber_id=2, list_id=1, campaign_id=3)
    serve_b = load_signer(settings_for(tmp_path, database_url, secret_key=KEY_B), store=store)
    assert serve_b.verify(by_store_key) == UnsubscribeClaims(1, 1, None)
    assert serve_b.verify(by_a) == UnsubscribeClaims(2, 1, 3)
    new = serve_b.sign(subscriber_id=4, list_id=1)
    assert TokenSigner(KEY_B.encode()).verify(new).subscriber_id == 4
    origins = {k.key_id: k.origin for k in store.signing_keys()}
    assert origins[key_id(KEY_A)] is KeyOrigin.CONFIGURED
    assert origins[key_id(KEY_B)] is KeyOrigin.CONFIGURED
    # Without a configured key again, the store's own key signs (not A or B).
    assert load_signer(settings_for(tmp_path, database_url), store=store).sign(
        subscriber_id=1, list_id=1
    ) == (by_store_key)


class CountingKeyStore:
    """The store, counting how often the server reads its keys."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0

    def signing_keys(self) -> list[SigningKey]:
        self.reads += 1
        return self.store.signing_keys()

    def add_signing_key(self, key: SigningKey) -> None:
        self.store.add_signing_key(key)


def test_a_running_server_learns_keys_recorded_after_it_started(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    """`mailer serve` started with key B; then a send with a new key A. The server reads
    the store again on the first link it cannot verify, at most once per interval, so a
    flood of forged links costs one read per interval."""
    now = [100.0]
    counting = CountingKeyStore(store)
    settings_b = settings_for(tmp_path, database_url, secret_key=KEY_B)
    server = StoreKeySigner(
        load_keyring(settings_b, counting), store=counting, clock=lambda: now[0]
    )
    assert isinstance(load_signer(settings_b, store=store), StoreKeySigner)
    link = load_signer(settings_for(tmp_path, database_url, secret_key=KEY_A), store=store).sign(
        subscriber_id=8, list_id=9
    )
    forged = TokenSigner(b"not-a-key-we-ever-had-0123456789").sign(subscriber_id=8, list_id=9)
    reads = counting.reads
    with pytest.raises(TokenError):
        server.verify(link)  # read at start just now: not again yet
    assert counting.reads == reads
    now[0] += KEY_REFRESH_INTERVAL
    assert server.verify(link) == UnsubscribeClaims(8, 9, None)
    assert counting.reads == reads + 1
    for _ in range(50):
        with pytest.raises(TokenError):
            server.verify(forged)
    assert counting.reads == reads + 1
    now[0] += KEY_REFRESH_INTERVAL
    with pytest.raises(TokenError):
        server.verify(forged)
    assert counting.reads == reads + 2
    assert server.verify(link).subscriber_id == 8  # learnt for good: no read needed
    assert counting.reads == reads + 2
    # New links from the server are still signed with its own key B.
    assert TokenSigner(KEY_B.encode()).verify(server.sign(subscriber_id=1, list_id=1))


def test_retiring_a_key_stops_its_links_and_only_those(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    by_a = load_signer(settings_for(tmp_path, database_url, secret_key=KEY_A), store=store).sign(
        subscriber_id=1, list_id=1
    )
    settings_b = settings_for(tmp_path, database_url, secret_key=KEY_B)
    by_b = load_signer(settings_b, store=store).sign(subscriber_id=2, list_id=1)
    retired = settings_b.model_copy(update={"retired_key_ids": [key_id(KEY_A)]})
    signer = load_signer(retired, store=store)
    with pytest.raises(TokenError):
        signer.verify(by_a)
    assert signer.verify(by_b).subscriber_id == 2
    # The signing key itself cannot be retired: that would sign links nobody accepts.
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_b.model_copy(update={"retired_key_ids": [key_id(KEY_B)]}), store=store)
    assert caught.value.setting == "MAILER_SECRET_KEY"
    assert KEY_B not in str(caught.value)


def test_retiring_the_store_key_makes_a_new_one(
    tmp_path: Path, store: Store, database_url: str
) -> None:
    settings = settings_for(tmp_path, database_url)
    old = load_keyring(settings, store).signing
    ring = load_keyring(settings.model_copy(update={"retired_key_ids": [old.key_id]}), store)
    assert ring.signing.key_id != old.key_id
    assert ring.signing.origin is KeyOrigin.GENERATED
    assert old.key_id not in {k.key_id for k in ring.verifying}


def test_fallbacks_verify_and_are_remembered(tmp_path: Path, sqlite_store: Store) -> None:
    url = str(sqlite_store.engine.url)
    old = TokenSigner(KEY_A.encode()).sign(subscriber_id=1, list_id=2)  # an earlier version
    rotated = settings_for(
        tmp_path, url, secret_key=SecretStr(KEY_B), secret_key_fallbacks=[SecretStr(KEY_A)]
    )
    assert load_signer(rotated, store=sqlite_store).verify(old) == UnsubscribeClaims(1, 2, None)
    # Dropping the fallback later does not silently break those links.
    forgot = settings_for(tmp_path, url, secret_key=SecretStr(KEY_B))
    assert load_signer(forgot, store=sqlite_store).verify(old) == UnsubscribeClaims(1, 2, None)


def test_the_old_demo_key_file_keeps_its_links(tmp_path: Path, sqlite_store: Store) -> None:
    """Links signed by an older version with var/secret_key verify after the upgrade."""
    legacy = "legacy-demo-key-0123456789abcdefghij"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text(legacy + "\n")
    old_link = TokenSigner(legacy.encode()).sign(subscriber_id=3, list_id=4)
    settings = settings_for(tmp_path, str(sqlite_store.engine.url), secret_key=KEY_B)
    assert load_signer(settings, store=sqlite_store).verify(old_link).subscriber_id == 3
    assert key_id(legacy) in {k.key_id for k in sqlite_store.signing_keys()}


def test_the_old_call_shape_opens_the_store_named_by_the_settings(
    tmp_path: Path, sqlite_url: str
) -> None:
    """`load_signer(settings)` (send, schedule, worker) uses the same keys as with a store."""
    settings = settings_for(tmp_path, sqlite_url)
    token = load_signer(settings).sign(subscriber_id=1, list_id=1)
    with Store.open(sqlite_url) as store:
        assert load_signer(settings, store=store).sign(subscriber_id=1, list_id=1) == token
        assert len(store.signing_keys()) == 1


def test_short_or_unreadable_keys_are_config_errors(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_for(tmp_path, sqlite_url, secret_key="short"))
    assert caught.value.setting == "MAILER_SECRET_KEY"
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_for(tmp_path, sqlite_url, secret_key_fallbacks=["short"]))
    assert caught.value.setting == "MAILER_SECRET_KEY_FALLBACKS"
    # An old key file that cannot be read stops startup; no new key silently replaces it.
    (tmp_path / "var" / "secret_key").mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_for(tmp_path, sqlite_url))
    assert caught.value.setting == "MAILER_SECRET_KEY"


# -- the CLI: send, then serve with another key ------------------------------------------


@pytest.fixture
def members(tmp_path: Path, smtp_server_thread: SmtpTestServer) -> SmtpTestServer:
    env = cli_environment(tmp_path, smtp_server_thread.port)
    example = REPO_ROOT / "subscribers.example.csv"
    result = run_mailer_here(
        env, tmp_path, "subscribers", "import", str(example), "--list", "members"
    )
    assert result.returncode == 0, result.stderr
    return smtp_server_thread


def unsubscribe_paths(server: SmtpTestServer) -> list[str]:
    """The `/u/TOKEN` path of the List-Unsubscribe link in each message received."""
    links = []
    for received in server.messages:
        message = email.message_from_bytes(received.data, policy=policy.default)
        header = str(message["List-Unsubscribe"])
        found = re.search(r"<https?://[^/>]+(/u/[^>]+)>", header)
        assert found is not None, header
        links.append(found.group(1))
    return links


StartServer = Callable[[dict[str, str]], str]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """Start `mailer serve` with the given environment; returns its base URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        port_file = tmp_path / f"port-{len(started)}"
        process = subprocess.Popen(
            mailer_command("serve", "--no-scheduler", "--port", "0", "--port-file", str(port_file)),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"mailer serve exited: {process.stderr.read().decode()}")
            assert time.monotonic() < deadline, "mailer serve did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port_file.read_text().strip()}"

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)  # waits, and closes the stderr pipe


def test_serve_with_another_key_opens_every_link_any_send_signed(
    tmp_path: Path, members: SmtpTestServer, serve: StartServer
) -> None:
    """`mailer send` without MAILER_SECRET_KEY, then with key A; `mailer serve` with key
    B (no fallbacks) opens the links of both sends, and unsubscribes on POST. The servers
    are child processes; the sends and `config show` run mailer.cli.main in this process
    (tests/cli_support.py)."""
    no_key = cli_environment(tmp_path, members.port)
    del no_key["MAILER_SECRET_KEY"]
    first = run_mailer_here(no_key, tmp_path, "send", str(EVENT), "--list", "members", "--yes")
    assert first.returncode == 0, first.stderr
    key_a = cli_environment(tmp_path, members.port, MAILER_SECRET_KEY=KEY_A)
    second = run_mailer_here(
        key_a, tmp_path, "send", str(EVENT), "--list", "members", "--new", "--yes"
    )
    assert second.returncode == 0, second.stderr
    links = unsubscribe_paths(members)
    assert len(links) == 24
    assert len(set(links[:12]) & set(links[12:])) == 0  # two keys, two sets of links

    base = serve(cli_environment(tmp_path, members.port, MAILER_SECRET_KEY=KEY_B))
    with httpx.Client(timeout=10) as client:
        statuses = {client.get(base + link).status_code for link in links}
        assert statuses == {200}
        one_click = client.post(
            base + links[0],
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert one_click.status_code == 200
    # A server with no key at all (the store's own) opens them too.
    bare = serve(no_key)
    assert {httpx.get(bare + link, timeout=10).status_code for link in links[11:13]} == {200}
    shown = run_mailer_here(key_a, tmp_path, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"signs with MAILER_SECRET_KEY (key {key_id(KEY_A)})" in shown.stdout
    assert key_id(KEY_B) in shown.stdout  # serve recorded the key it signs with
    assert "(generated)" in shown.stdout
    assert KEY_A not in shown.stdout
    assert KEY_B not in shown.stdout


def test_config_show_says_where_keys_come_from_never_the_keys(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=sqlite_url,
        MAILER_SECRET_KEY=KEY_A,
        MAILER_SECRET_KEY_FALLBACKS=f'["{KEY_B}"]',
        MAILER_RETIRED_KEY_IDS='["0123456789ab"]',
        COLUMNS="200",
    )
    with Store.open(sqlite_url) as store:
        load_signer(settings_for(tmp_path, sqlite_url), store=store)  # the store's own key
        own = store.signing_keys()[0].key_id
    shown = run_mailer_here(env, tmp_path, "config", "show")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"signs with MAILER_SECRET_KEY (key {key_id(KEY_A)})" in out
    assert f"{own} (generated)" in out
    assert "MAILER_SECRET_KEY_FALLBACKS: 1 key(s)" in out
    assert "retired, no longer verifying: 0123456789ab" in out
    assert KEY_A not in out
    assert KEY_B not in out
