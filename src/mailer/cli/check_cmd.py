"""`mailer config check`: one line per check, exit status 1 if any failed."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Annotated

import typer

from mailer.cli import common

# A DKIM selector is one or more DNS labels (RFC 6376 3.1).
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_-]+)*$")


def register(config_app: typer.Typer) -> None:
    @config_app.command("check")
    def check(
        ctx: typer.Context,
        dkim_selector: Annotated[
            str | None,
            typer.Option(
                "--dkim-selector",
                metavar="NAME",
                help="Check the DKIM key at NAME._domainkey.<From domain>.",
                show_default=False,
            ),
        ] = None,
        dns_server: Annotated[
            str | None,
            typer.Option(
                "--dns-server",
                metavar="IP[:PORT]",
                help="Ask this DNS server instead of the system's resolver.",
                show_default=False,
            ),
        ] = None,
        timeout: Annotated[
            float,
            typer.Option(min=0.1, help="Seconds to wait for the relay, the pages and DNS."),
        ] = 10.0,
    ) -> None:
        """Check the settings for a real send, the relay, the unsubscribe pages and DNS.

        Nothing is sent: the relay check logs in (when credentials are set) and quits.
        """
        from mailer.campaigns.doctor import run_checks, system_resolver

        if dkim_selector is not None and not _SELECTOR.match(dkim_selector):
            raise typer.BadParameter(
                "a DKIM selector is a DNS name such as 's1' or 'mail2024'",
                param_hint="--dkim-selector",
            )
        resolver = None
        if dns_server is not None:
            address, port = _dns_server(dns_server)
            resolver = system_resolver(timeout=timeout, nameserver=address, port=port)
        settings = common.settings_from(ctx)
        findings = asyncio.run(
            run_checks(settings, resolver=resolver, dkim_selector=dkim_selector, wait=timeout)
        )
        for finding in findings:
            common.console.print(finding.line, markup=False)
        failed = sum(finding.failed for finding in findings)
        if failed:
            common.console.print(
                f"{failed} check(s) failed: fix them before sending to real people.",
                markup=False,
            )
            raise typer.Exit(1)
        common.console.print("Ready for a real send.", markup=False)


def _dns_server(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT`; a name would need DNS to find DNS."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not IP or IP:PORT (e.g. 9.9.9.9 or 127.0.0.1:5353)",
            param_hint="--dns-server",
        ) from exc
    return host, number
