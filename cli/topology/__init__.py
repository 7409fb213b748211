"""``auth0-events topology``: the command, and the migration of the queues from one type to the other."""
