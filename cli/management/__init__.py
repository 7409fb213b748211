"""The Auth0 Management API as `backfill` and `stream` use it: token, pacing, retries, logs, the fill."""
