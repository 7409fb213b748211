"""The plug-in API's database access: ``from tasks.db import session_scope`` keeps working for handlers.

The database code lives in the shared kernel (kernel/storage/db.py), which the receiver and the command
line use too; this module only re-exports what handler packages and their tests use.
"""

from kernel.storage.db import get_engine, session_scope, transaction

__all__ = ["get_engine", "session_scope", "transaction"]
