"""``auth0-events backfill``: the command, and the run it drives (Management API log pages, checkpoints)."""
