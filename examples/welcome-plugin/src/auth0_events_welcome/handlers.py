"""Handlers of the welcome plug-in, registered by the ``auth0_events.handlers`` entry point."""

from __future__ import annotations

import os

import httpx
from sqlalchemy import Column, DateTime, MetaData, String, Table, func
from sqlalchemy.orm import Session

from tasks.events import Auth0Event
from tasks.handlers import PermanentError, RetryableError, handles

metadata = MetaData()
welcome_list = Table(
    "welcome_list",
    metadata,
    Column("log_id", String(128), primary_key=True),
    Column("user_id", String(255)),
    Column("email", String(255)),
    Column("added_at", DateTime(timezone=True), server_default=func.now()),
)


@handles("ss", transactional=True)
def add_to_welcome_list(event: Auth0Event, session: Session) -> None:
    """Put the new user on the welcome list, committed with the ledger's mark: exactly once."""
    # A real plug-in would ship an Alembic migration; creating the table here keeps the example short.
    welcome_list.create(session.connection(), checkfirst=True)
    session.execute(
        welcome_list.insert().values(log_id=event.log_id, user_id=event.user_id, email=event.user_name)
    )


@handles("ss")
def tell_the_crm(event: Auth0Event) -> None:
    """POST the new user to WELCOME_CRM_URL, if set; at least once, deduplicated by the ledger."""
    url = os.environ.get("WELCOME_CRM_URL")
    if not url:
        return
    try:
        response = httpx.post(url, json={"user_id": event.user_id, "email": event.user_name}, timeout=10)
    except httpx.TransportError as exc:
        raise RetryableError(f"CRM unreachable: {exc}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise RetryableError(f"CRM answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"CRM refused the user: {response.status_code} {response.text[:200]}")
