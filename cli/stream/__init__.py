"""``auth0-events stream``: the log stream's health (status) and the watch that fills its gaps."""
