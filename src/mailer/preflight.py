"""Refuse a send that would reach real people broken, before the first connection.

The embedded defaults run the demo: a catcher on 127.0.0.1, unsubscribe pages at
http://127.0.0.1:8000 and `invitations@mailer.localhost` as the sender. Sent through a
relay on another machine they reach real inboxes with links nobody can open (and a
`List-Unsubscribe-Post` on an http URI, which RFC 8058 forbids) from an address nobody can
answer or authenticate. So when the relay is off this machine, the sender and the base URL
must be real. A relay on this machine (the catcher, a local test server) is exempt: that
is how the demo and the tests run.

Only the settings are read: nothing is resolved or fetched (`mailer config check` does
that). A host name other than `localhost` counts as off this machine.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mailer.config import Settings
from mailer.errors import ConfigError

__all__ = ["check_real_send", "is_local_host", "real_send_problems", "reserved_domain"]

# RFC 2606 / RFC 6761 special-use names: no one receives mail there, and no receiver can
# check SPF, DKIM or DMARC for them, so a From address there is as good as unset.
_RESERVED_SUFFIXES = ("localhost", "invalid", "test", "example")
_EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")

_BASE_URL_HINT = (
    "Set MAILER_BASE_URL to the https:// address where `mailer serve` is reachable from the "
    "internet (behind your HTTPS reverse proxy)."
)
_FROM_HINT = (
    "Set MAILER_FROM_ADDRESS to an address at your own domain that your relay may send for "
    "(and MAILER_FROM_NAME to your organisation's name)."
)


def is_local_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); no lookup is made."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # any other name may resolve anywhere: count it as another machine
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def real_send_problems(settings: Settings) -> list[ConfigError]:
    """Every setting that would break a send to real people, whatever the relay.

    `check_real_send` applies these only when the relay is off this machine;
    `mailer config check` reports them always.
    """
    problems: list[ConfigError] = []
    base_url = _base_url_problem(settings)
    if base_url is not None:
        problems.append(ConfigError(base_url, setting="MAILER_BASE_URL", hint=_BASE_URL_HINT))
    sender = _from_address_problem(settings)
    if sender is not None:
        problems.append(ConfigError(sender, setting="MAILER_FROM_ADDRESS", hint=_FROM_HINT))
    return problems


def check_real_send(settings: Settings) -> None:
    """Raise ConfigError if a send through a relay off this machine would go out broken."""
    # With MAILER_RELAYS those relays are the ones used (the single relay setting is not).
    hosts = [relay.host for relay in settings.relays] or [settings.smtp_host]
    remote = [host for host in hosts if not is_local_host(host)]
    if not remote:
        return
    problems = real_send_problems(settings)
    if not problems:
        return
    first = problems[0]
    more = len(problems) - 1
    also = f" (and {more} more: run `mailer config check`)" if more else ""
    raise ConfigError(
        f"refusing to send through {remote[0]}: {first.message}{also}",
        setting=first.setting,
        hint=first.hint,
    )


# -- the rules ----------------------------------------------------------------------------


def _is_default(settings: Settings, name: str) -> bool:
    default = Settings.model_fields[name].default
    return name not in settings.model_fields_set or getattr(settings, name) == default


def _base_url_problem(settings: Settings) -> str | None:
    url = settings.base_url
    if _is_default(settings, "base_url"):
        return (
            f"MAILER_BASE_URL is not set (the default {url} is on this machine): "
            "recipients' unsubscribe links would lead nowhere"
        )
    host = urlsplit(url).hostname or ""
    if not host:
        return f"MAILER_BASE_URL {url} names no host: unsubscribe links would lead nowhere"
    if is_local_host(host) or host.endswith(".localhost") or _is_unspecified(host):
        return (
            f"MAILER_BASE_URL {url} is on this machine: "
            "recipients' unsubscribe links would lead nowhere"
        )
    if not url.startswith("https://"):
        return (
            f"MAILER_BASE_URL {url} is not https://: RFC 8058 one-click unsubscribe "
            "(List-Unsubscribe-Post) needs an https link"
        )
    return None


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified  # 0.0.0.0 or ::, a bind address
    except ValueError:
        return False


def _from_address_problem(settings: Settings) -> str | None:
    address = settings.from_address.strip()
    if not address or _is_default(settings, "from_address"):
        demo = Settings.model_fields["from_address"].default
        return (
            f"MAILER_FROM_ADDRESS is not set (the demo's {demo} cannot be answered "
            "or authenticated)"
        )
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or not domain:
        return f"MAILER_FROM_ADDRESS {address} is not an email address"
    if reserved_domain(domain):
        return (
            f"MAILER_FROM_ADDRESS {address} is at {domain}, a reserved domain: "
            "no one can answer it and no receiver can authenticate it"
        )
    return None


def reserved_domain(domain: str) -> bool:
    """True for special-use names (.localhost, .invalid, .test, .example, example.com/org/net)."""
    name = domain.rstrip(".").lower()
    for suffix in (*_RESERVED_SUFFIXES, *_EXAMPLE_DOMAINS):
        if name == suffix or name.endswith("." + suffix):
            return True
    return False
