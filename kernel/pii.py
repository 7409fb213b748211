"""Personal data in free text (e-mail and IP addresses, the current event's user and IP), found and masked."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from urllib.parse import unquote

# Hand-written patterns: the scrubbing libraries (scrubadub, presidio) bring NLP models for names and
# addresses this service does not need. Candidates are found broadly and IPs confirmed by `ipaddress`.
# An address's local part may hold any of RFC 5322's characters; the top-level domain starts with a
# letter, so "guest:**@10.0.0.12" is no address.
_EMAIL = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])([\w.!#$%&'*+/=?^`{|}~-]+)@((?:[\w-]+\.)+[^\W\d_][\w-]*)")
# Of those, quotes, '/', '=', '?', '&' and '`' delimit far more often in logs than they belong to an
# address ("?user=jane@example.org", "('jane@example.org', …)"): the mask starts after the last of them.
_LOCAL_PART_DELIMITERS = frozenset("'/=?&`")
# A stretch of hex digits, colons and dots with at least two colons: an IPv6 address, possibly
# compressed or IPv4-mapped, or a time of day (10:00:00, which `ipaddress` rejects). It starts where a
# word does not, or right after "<letter>:" as in "ip:2001:db8::1".
_IPV6 = re.compile(r"(?:(?<![\w:.])|(?<=[^\W\d_]:))[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*")
# Four dotted numbers that are not part of a longer dotted number (a version such as 1.2.3.4.5).
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
# A token holding %XX escapes (a URL's path or query): decoded before it is searched.
_PERCENT_ENCODED = re.compile(r"(?<![\w.~+%-])[\w.~+%-]*%[0-9A-Fa-f]{2}[\w.~+%-]*")
# Celery names a worker node "<name>@<hostname>": not an address, though shaped like one.
_HOSTNAME = socket.gethostname().lower()
# Shorter known values would mask ordinary words, and name no one.
_MIN_KNOWN_LENGTH = 3

_known: ContextVar[tuple[str, ...]] = ContextVar("auth0_events_personal_values", default=())


#: The secret of mask()'s keyed hash (AUTH0_EVENTS_LOG_MASK_KEY), set by configure_logging.
_mask_key: list[bytes] = []


def set_mask_key(key: str) -> None:
    """Key mask()'s hash with ``key`` in this process (an empty key: the plain SHA-256)."""
    _mask_key[:] = [key.encode()] if key else []


def mask(value: str) -> str:
    """A stable stand-in for a personal value: ``masked:<8 hex>``, the start of its keyed hash.

    A hash rather than asterisks, so lines about the same person can still be correlated. Keyed
    (HMAC-SHA256 with AUTH0_EVENTS_LOG_MASK_KEY): a plain hash of an IPv4 address is found again by hashing
    all 2**32 of them; without the key no candidate value can be checked.
    """
    data = value.encode("utf-8", "surrogatepass")
    if _mask_key:
        return "masked:" + hmac.new(_mask_key[0], data, hashlib.sha256).hexdigest()[:8]
    return "masked:" + hashlib.sha256(data).hexdigest()[:8]


@contextmanager
def personal_values(*values: str | None) -> Iterator[None]:
    """Inside the block, mask_text() also masks ``values`` (an event's user id, user name and IP)."""
    added = tuple(value for value in values if value and len(value) >= _MIN_KNOWN_LENGTH)
    token = _known.set((*_known.get(), *added))
    try:
        yield
    finally:
        _known.reset(token)


def current_personal_values() -> tuple[str, ...]:
    """The values personal_values() added in the current context."""
    return _known.get()


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every e-mail address, IP address and ``known`` value replaced by its mask().

    Loopback and unspecified addresses (127.0.0.1, 0.0.0.0, ::1) are kept: they name this machine and
    where a server listens, not a person.
    """
    known = tuple(known)
    if "%" in text:
        text = _PERCENT_ENCODED.sub(lambda match: _mask_encoded(match.group(), known), text)
    return _mask_plain(text, known)


def _mask_plain(text: str, known: tuple[str, ...]) -> str:
    if known:
        text = _known_pattern(tuple(sorted(set(known), key=len, reverse=True))).sub(_masked, text)
    if "@" in text:
        text = _EMAIL.sub(_masked_email, text)
    if ":" in text:
        text = _IPV6.sub(_masked_ip, text)
    if "." in text:
        text = _IPV4.sub(_masked_ip, text)
    return text


def _mask_encoded(token: str, known: tuple[str, ...]) -> str:
    decoded = unquote(token)
    masked = _mask_plain(decoded, known)
    return token if masked == decoded else masked


@lru_cache(maxsize=64)
def _known_pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words only where a value begins or ends with a word character: the user name "ann" must not
    # mask "annual". Longest first, so a user id is masked whole rather than the user name inside it.
    return re.compile("|".join(_bounded(value) for value in values))


def _bounded(value: str) -> str:
    before = r"(?<!\w)" if re.match(r"\w", value) else ""
    after = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
    return before + re.escape(value) + after


def _masked(match: re.Match[str]) -> str:
    return mask(match.group())


def _masked_email(match: re.Match[str]) -> str:
    local, domain = match.groups()
    if domain.lower() == _HOSTNAME:
        return match.group()
    start = len(local)
    while start and local[start - 1] not in _LOCAL_PART_DELIMITERS:
        start -= 1
    if start == len(local):  # nothing but delimiters: mask them all rather than leave the address
        start = 0
    return local[:start] + mask(f"{local[start:]}@{domain}")


def _masked_ip(match: re.Match[str]) -> str:
    candidate = match.group()
    for start, end in _trims(candidate):
        try:
            address = ipaddress.ip_address(candidate[start:end])
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified:
            return candidate
        return candidate[:start] + mask(candidate[start:end]) + candidate[end:]
    return candidate


def _trims(candidate: str) -> Iterator[tuple[int, int]]:
    """The spans to try: the whole candidate, then without the punctuation a sentence or a key adds.

    "…from 2001:db8::1." ends with a full stop, "ip:2001:db8::1" starts with the key's colon; "::1" and
    "fe80::" begin and end with colons of their own.
    """
    end = len(candidate.rstrip("."))
    ends = [end, end - 1] if candidate[:end].endswith(":") and not candidate[:end].endswith("::") else [end]
    starts = [0, 1] if candidate.startswith(":") and not candidate.startswith("::") else [0]
    for start in starts:
        for stop in ends:
            yield start, stop
