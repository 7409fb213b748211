"""stream watch: the events' source (stream or backfill) and the watcher's lease

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every event archived so far came through the stream or an untagged backfill: "stream" is the
    # truthful default for the stream's, and nothing recorded which were backfilled.
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), server_default="stream", nullable=False))
    op.create_index("ix_events_source_received_at", "events", ["source", "received_at"])
    op.create_table(
        "watcher_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("watcher_leases")
    op.drop_index("ix_events_source_received_at", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("source")
