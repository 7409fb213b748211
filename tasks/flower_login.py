"""Refuse to start Flower with a placeholder or empty login: the Procfile runs this before Flower."""

from __future__ import annotations

import os
import sys

from kernel.settings import ConfigurationError, check_flower_basic_auth


def main() -> None:
    """Exit 1 naming FLOWER_BASIC_AUTH when it is unset, malformed or a placeholder; else exit 0."""
    try:
        check_flower_basic_auth(os.environ.get("FLOWER_BASIC_AUTH", ""))
    except ConfigurationError as exc:
        sys.exit(f"flower refuses to start: {exc}")


if __name__ == "__main__":
    main()
