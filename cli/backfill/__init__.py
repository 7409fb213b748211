"""``auth0-events backfill``: the command; its run (cli/management/fill.py) is shared with `stream watch`."""
