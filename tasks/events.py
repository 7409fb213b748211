"""The plug-in API's event model: ``from tasks.events import Auth0Event`` keeps working for handler packages.

The model lives in the shared kernel (kernel/events.py), which the receiver uses too; this module only
re-exports it, so handlers written against ``tasks.events`` need no change.
"""

from kernel.events import (
    MAX_LOG_ID_LENGTH,
    Auth0Event,
    InvalidRecord,
    normalize_record,
    parse_event,
    storable_record,
    storable_text,
)

__all__ = [
    "MAX_LOG_ID_LENGTH",
    "Auth0Event",
    "InvalidRecord",
    "normalize_record",
    "parse_event",
    "storable_record",
    "storable_text",
]
