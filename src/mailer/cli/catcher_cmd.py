"""`mailer catcher`: a local SMTP server that saves every message to the outbox."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mailer.cli import common


def register(app: typer.Typer) -> None:
    app.command("catcher")(catcher)


def catcher(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 2525,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    outbox: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Where to save messages.  [default: MAILER_VAR_DIR/outbox]"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Do not print a line per message.")] = False,
) -> None:
    """Catch mail locally: accept every message and save it as an .eml file (Ctrl-C stops)."""
    settings = common.settings_from(ctx)
    directory = outbox if outbox is not None else settings.var_dir / "outbox"
    received = asyncio.run(_serve(directory, host=host, port=port, quiet=quiet))
    common.console.print(f"Stopped. {received} message(s) saved in {escape(str(directory))}.")


async def _serve(directory: Path, *, host: str, port: int, quiet: bool) -> int:
    from mailer.delivery.catcher import Catcher

    def announce(path: Path) -> None:
        common.console.print(f"saved {escape(str(path))}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Stop cleanly (close sessions, finish the file being written) instead of
        # unwinding through KeyboardInterrupt in the middle of a write.
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Catcher(
            directory, host=host, port=port, on_message=None if quiet else announce
        ) as c:
            common.console.print(
                f"Catching mail on [bold]{escape(host)}:{c.port}[/bold]; "
                f"saving to {escape(str(directory))}. Press Ctrl-C to stop."
            )
            await stop.wait()
            return c.received
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
