"""Alembic environment: runs migrations on the URL kernel.storage.db.alembic_config gives (DATABASE_URL)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from kernel.settings import get_settings
from kernel.storage.db import make_engine
from kernel.storage.models import Base, UTCDateTime

config = context.config


def render_item(kind: str, item: Any, autogen_context: Any) -> str | Literal[False]:
    """Write UTCDateTime as the plain column type it stores, so migrations do not import the models."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
