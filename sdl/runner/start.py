"""Starting a run: a new campaign (with its warm start), or the strategy snapshot of a stored one to resume."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Callable

from sdl.config import Campaign
from sdl.manual import warm_start
from sdl.runner.events import CampaignCreated, Event, WarmStartQueued
from sdl.store import Store


def new_campaign_id(name: str) -> str:
    return f"{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def create(campaign: Campaign, store: Store, emit: Callable[[Event], None]) -> str:
    """A new campaign: its id, CampaignCreated, and with `strategy.warm_start` the earlier
    campaign's completed trials queued as manual experiments (WarmStartQueued; the loop attaches
    them when it starts). The earlier campaign is read first, so an unknown one (StoreError)
    stores nothing. Returns the campaign id."""
    prior, skipped = warm_start(store, campaign)
    campaign_id = new_campaign_id(campaign.name)
    emit(CampaignCreated(campaign_id=campaign_id, campaign=campaign))
    for row in prior:
        row.campaign_id = campaign_id
    if campaign.strategy.warm_start:
        emit(WarmStartQueued(campaign_id=campaign_id, rows=tuple(prior), source=campaign.strategy.warm_start.campaign,
                             skipped=tuple(skipped)))
    return campaign_id


def snapshot(store: Store, campaign_id: str) -> str | None:
    """The strategy state stored with a campaign (None before its first proposal)."""
    return store.find_campaign(campaign_id).strategy_state
