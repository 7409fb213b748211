"""py-amqp's decoding of message properties, made unable to fail and unable to trigger decompression.

py-amqp decodes a delivery's properties (the headers table included) recursively, inside the frame
reader, before any consumer code runs. Headers nested a few thousand levels deep raise RecursionError
there (a malformed table raises FrameSyntaxError, a bad string UnicodeDecodeError): the exception leaves
the worker's event loop, which exits, and the redelivered message kills every restart. And kombu
decompresses a body whose headers name a ``compression`` before Celery sees it, so a small compressed
body can expand until the worker runs out of memory, again on every redelivery.

No setting of py-amqp or kombu bounds either, hence this hand-written wrapper of py-amqp's decoder for
basic properties (``amqp.serialization.PROPERTY_CLASSES``), installed in the worker and the ``dlq``
command. A delivery whose properties cannot be decoded arrives with a marker instead of its headers; a
``compression`` header is moved aside so the body stays as sent. Both markers are Python objects that
no AMQP table decodes to, so a publisher cannot forge them; tasks/consumer.py refuses either message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from amqp import serialization
from amqp.spec import Basic

#: The header under which a marker replaces what could not be taken as sent.
MARKER_HEADER = "x-auth0-events-unreadable"

Decoder = Callable[[Any, int], tuple[dict[str, Any], int]]


@dataclass(frozen=True)
class Unreadable:
    """Why a delivery's properties were not taken as sent (the marker the decoder leaves)."""

    reason: str
    #: The ``compression`` header's value moved aside, when that is the reason.
    compression: str | None = None


def flaw(headers: Mapping[Any, Any] | None) -> Unreadable | None:
    """The marker the decoder left in ``headers`` (a delivery's application headers), if any."""
    marker = (headers or {}).get(MARKER_HEADER)
    return marker if isinstance(marker, Unreadable) else None


def install() -> None:
    """Wrap py-amqp's basic-properties decoder in this process; calling it again changes nothing."""
    current: Decoder = serialization.PROPERTY_CLASSES[Basic.CLASS_ID]
    if getattr(current, "guarded", False):
        return
    serialization.PROPERTY_CLASSES[Basic.CLASS_ID] = _guarded(current)


def _guarded(decode: Decoder) -> Decoder:
    def decode_properties(buf: Any, offset: int) -> tuple[dict[str, Any], int]:
        try:
            properties, end = decode(buf, offset)
        except Exception as exc:  # noqa: BLE001 - any failure here would end the worker's event loop
            # The frame holds nothing but these properties, so nothing after them is lost.
            marker = Unreadable(f"its AMQP properties cannot be decoded ({type(exc).__name__})")
            return {"application_headers": {MARKER_HEADER: marker}}, len(buf)
        headers = properties.get("application_headers")
        if isinstance(headers, dict) and "compression" in headers:
            compression = headers.pop("compression")
            named = compression if isinstance(compression, str) else type(compression).__name__
            headers[MARKER_HEADER] = Unreadable(
                f"its body is compressed ({ascii(named[:100])}), which this service never does",
                str(compression),
            )
        return properties, end

    decode_properties.guarded = True  # type: ignore[attr-defined]
    return decode_properties
