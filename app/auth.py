"""Log stream token check: the only authentication Auth0 log streams offer."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def token_from_header(header: str | None) -> str:
    """Return the token in an Authorization header, with or without a ``Bearer`` prefix.

    Auth0 sends verbatim whatever the admin typed into the stream's Authorization field and adds no
    ``Bearer`` prefix of its own, so both ``<token>`` and ``Bearer <token>`` reach us.
    """
    value = (header or "").strip()
    parts = value.split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return value


def is_authorized(header: str | None, tokens: Iterable[str]) -> bool:
    """Whether the header carries one of ``tokens``, compared in constant time against each of them."""
    presented = token_from_header(header).encode()
    matched = False
    for token in tokens:
        # No early exit: the time taken must not tell which token, or how many, matched.
        matched |= bool(token) and hmac.compare_digest(presented, token.encode())
    return matched
