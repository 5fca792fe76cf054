"""`mailer serve`: the unsubscribe web app under uvicorn, and the scheduler beside it.

Both run on one event loop inside `asyncio.run`. uvicorn takes SIGINT/SIGTERM while it
serves and, once stopped, restores the handlers it found and raises the signal again; the
handlers installed here first receive that and stop the scheduler, which finishes the
messages in flight and releases its campaigns for the next worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mailer.cli import common
from mailer.cli.schedule_cmd import run_worker
from mailer.logs import configure_logging
from mailer.web.limits import POST_BURST, POST_RATE_PER_MINUTE


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    port_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write the port actually bound to this file once serving."
        ),
    ] = None,
    post_rate_limit: Annotated[
        float,
        typer.Option(
            help="POSTs with an invalid link allowed per minute per client address "
            "(0: no limit). POSTs with a valid link are never limited."
        ),
    ] = POST_RATE_PER_MINUTE,
    post_burst: Annotated[
        int,
        typer.Option(help="POSTs with an invalid link a client may make at once."),
    ] = POST_BURST,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler/--no-scheduler", help="Also send scheduled campaigns (as `mailer worker`)."
        ),
    ] = True,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            metavar="ADDRESSES",
            help="Addresses or networks of your reverse proxies (comma-separated, or '*'): "
            "only connections from them may name the client in X-Forwarded-For and "
            "X-Forwarded-Proto. Default: none, so nobody can choose the address the "
            "invalid-link limit counts against.",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Serve the unsubscribe pages (GET shows, POST unsubscribes); Ctrl-C stops."""
    from mailer.store.signer import load_signer
    from mailer.web import create_app

    trusted_proxies = parse_trusted_proxies(forwarded_allow_ips)
    settings = common.settings_from(ctx)
    with common.open_store(settings) as store:
        # A bad key stops us here, before binding; keys recorded later are learnt too.
        signer = load_signer(settings, store=store)
        configure_logging()
        app = create_app(
            store=store,
            signer=signer,
            settings=settings,
            post_rate_per_minute=post_rate_limit if post_rate_limit > 0 else None,
            post_burst=post_burst,
        )
        listener = _bind(host, port)
        bound = listener.getsockname()[1]
        common.console.print(
            f"Serving unsubscribe pages on [bold]http://{escape(_url_host(host))}:{bound}[/bold] "
            f"(links in mail point to {escape(settings.base_url)}). Press Ctrl-C to stop."
        )
        worker = (lambda stop: run_worker(settings, store, stop=stop)) if scheduler else None
        asyncio.run(
            _serve(app, listener, port_file=port_file, forwarded=trusted_proxies, worker=worker)
        )


async def _serve(
    app: object,
    listener: socket.socket,
    *,
    port_file: Path | None,
    forwarded: list[str],
    worker: Callable[[asyncio.Event], Coroutine[object, object, None]] | None = None,
) -> None:
    import uvicorn

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    scheduling: asyncio.Task[None] | None = None
    if worker is not None:
        scheduling = asyncio.create_task(worker(stop))

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,  # our logging.basicConfig; the app logs its own redacted lines
        access_log=False,  # uvicorn's access log would print the token in every path
        # uvicorn trusts 127.0.0.1 (or $FORWARDED_ALLOW_IPS) unless told otherwise, which
        # lets anything on this machine pose as any client; so: the list given, or off.
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded,
        server_header=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    if port_file is not None:
        # uvicorn offers a flag, not an event, for "listening now".
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if server.started:
            _write_atomically(port_file, f"{listener.getsockname()[1]}\n")
    try:
        await serving
    finally:
        # Let uvicorn's re-raised signal reach on_signal first, then stop the scheduler.
        await asyncio.sleep(0)
        stop.set()
        if scheduling is not None:
            await scheduling


def parse_trusted_proxies(value: str) -> list[str]:
    """`--forwarded-allow-ips` as uvicorn takes it, each entry checked: uvicorn would take a
    mistyped address as a name that never matches, and trust nobody without a word."""
    import ipaddress

    from mailer.errors import ConfigError

    entries = [item.strip() for item in value.split(",") if item.strip()]
    if entries == ["*"]:
        return entries
    for entry in entries:
        try:
            ipaddress.ip_network(entry)  # an address is a network of one
        except ValueError as exc:
            raise ConfigError(
                f"--forwarded-allow-ips: {entry!r} is not an IP address or network",
                hint="Give your reverse proxies' addresses, e.g. 127.0.0.1,10.0.0.0/8, or '*'.",
            ) from exc
    return entries


def _bind(host: str, port: int) -> socket.socket:
    """Bind before starting uvicorn, so port 0 works and the real port can be reported."""
    from mailer.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets
    # whose proto says TCP, and without it every keep-alive response waits ~40 ms for a
    # delayed ACK (measured: 22 requests/s per connection instead of ~1,000).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="Choose another --port (or stop whatever already uses it).",
        ) from exc
    listener.set_inheritable(True)
    return listener


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
