"""How a run ends, as the organiser sees it afterwards: a finished campaign's report is
already kept when the sender returns (the dashboard's first view of a large report does
not group the ledger), and a relay that cannot be reached is named by the setting that
points at it (MAILER_RELAYS when set, not the unused single-relay settings)."""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import select

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.models import CampaignStatus
from mailer.sending.engine import StopReason
from mailer.store import Store
from mailer.store.dashboard import ReportFigures, campaign_reports
from smtp_server import SmtpTestServer


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_finished_campaign_has_its_report_kept_when_the_send_returns(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 12)
    campaign_id = new_campaign(store)
    result = await send(make_settings(tmp_path, smtp_server.port), store, campaign_id)
    assert result.campaign.status is CampaignStatus.FINISHED
    with store.engine.connect() as connection:
        kept = connection.execute(
            select(campaign_reports.c.body).where(campaign_reports.c.campaign_id == campaign_id)
        ).scalar_one()
    figures = ReportFigures.from_json(kept)
    # What the dashboard reads is what the ledger says, without computing it again.
    assert figures == store.report_figures(campaign_id, CampaignStatus.FINISHED)
    assert figures.to_json() == kept
    assert len(smtp_server.messages) == 12


async def test_a_paused_campaign_keeps_no_report(store: Store, tmp_path: Path) -> None:
    """Only a finished campaign's figures are kept at the end of a run: a paused one's
    still change."""
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    result = await send(make_settings(tmp_path, _closed_port()), store, campaign_id)
    assert result.stop.reason is StopReason.RELAY_DOWN
    with store.engine.connect() as connection:
        kept = connection.execute(
            select(campaign_reports.c.campaign_id).where(
                campaign_reports.c.campaign_id == campaign_id
            )
        ).first()
    assert kept is None


async def test_relays_that_cannot_be_reached_are_named_by_mailer_relays(
    store: Store, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    relays = [
        {"name": "relay-a", "host": "127.0.0.1", "port": _closed_port()},
        {"name": "relay-b", "host": "127.0.0.1", "port": _closed_port()},
    ]
    settings = make_settings(tmp_path, _closed_port(), relays=relays)
    result = await send(settings, store, campaign_id)
    assert result.stop.reason is StopReason.RELAY_DOWN
    assert result.campaign.status is CampaignStatus.PAUSED
    assert "Check the relays in MAILER_RELAYS" in result.message
    assert "MAILER_SMTP_HOST" not in result.message


async def test_the_single_relay_that_cannot_be_reached_is_named_by_its_settings(
    store: Store, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    result = await send(make_settings(tmp_path, _closed_port()), store, campaign_id)
    assert result.stop.reason is StopReason.RELAY_DOWN
    assert "Check MAILER_SMTP_HOST and MAILER_SMTP_PORT" in result.message
