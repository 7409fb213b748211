"""Tests of the welcome plug-in with auth0-events' own fixtures: no broker, the real ledger."""

from __future__ import annotations

from auth0_events_welcome.handlers import welcome_list
from sqlalchemy import func, select

from tasks.db import session_scope
from tasks.testing import make_event, run_handlers

# The auth0_database fixture comes from tasks.testing, a pytest plug-in installed with auth0-events.


def welcome_rows(database_url: str) -> int:
    """How many users are on the welcome list."""
    with session_scope(database_url) as session:
        welcome_list.create(session.connection(), checkfirst=True)
        return int(session.execute(select(func.count()).select_from(welcome_list)).scalar_one())


def test_new_user_is_added_once_even_when_delivered_twice(auth0_database: str) -> None:
    """A signup delivered twice (Auth0 is at-least-once) puts the user on the list once."""
    event = make_event("ss", user_id="auth0|new", user_name="new@example.com")
    first = run_handlers(event, database_url=auth0_database)
    second = run_handlers(event, database_url=auth0_database)
    assert "auth0_events_welcome.handlers.add_to_welcome_list" in first.ran
    assert "auth0_events_welcome.handlers.add_to_welcome_list" in second.skipped
    assert welcome_rows(auth0_database) == 1


def test_other_event_types_are_ignored(auth0_database: str) -> None:
    """A successful login is not a signup: nothing is added."""
    run_handlers(make_event("s"), database_url=auth0_database)
    assert welcome_rows(auth0_database) == 0
