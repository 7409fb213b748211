"""``auth0-events send``: the command, the sample record generator and the sender that POSTs them."""
