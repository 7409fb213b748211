"""BROKER_URL's nodes: kombu's failover form (``amqp://…;amqp://…``) split, checked and shown safely.

Every process hands the whole URL to kombu (directly or through Celery), which connects to the first node
that answers and moves on to the next when one goes; this module only reads the list.
"""

from __future__ import annotations

from kombu.connection import Connection
from kombu.utils.url import maybe_sanitize_url, parse_url

# What kombu accepts in BROKER_URL for RabbitMQ through py-amqp (``pyamqp`` is an alias of ``amqp``).
SCHEMES = ("amqp", "amqps", "pyamqp")


def broker_nodes(url: str) -> list[str]:
    """The URL of each node, in the order they are tried (kombu splits on ``;`` the same way)."""
    return url.split(";")


def hide_passwords(url: str) -> str:
    """``url`` with the password of every node hidden (kombu's way: ``amqp://guest:**@host//``).

    kombu's own ``maybe_sanitize_url`` parses the whole string as one URL, so it hides the first node's
    password and leaves the others' in the message.
    """
    return ";".join(str(maybe_sanitize_url(node)) for node in broker_nodes(url))


def broker_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be BROKER_URL (never repeating a password), or None when it can.

    Each node must be an AMQP URL with a host, and every node must name the same virtual host: a node
    pointing elsewhere would split the queues between two places without an error.
    """
    vhosts = set()
    for number, node in enumerate(broker_nodes(url), start=1):
        where = f"node {number} of {len(broker_nodes(url))}" if ";" in url else "the URL"
        if not node.strip():
            return f"{where} is empty (nodes are separated by ';', without a ';' at either end)"
        scheme, separator, _rest = node.partition("://")
        if not separator or scheme not in SCHEMES:
            return f"{where} is not an AMQP URL (amqp://user:password@host:port/vhost)"
        try:
            parts = parse_url(node)
        except ValueError:
            return f"{where} is not a valid URL"
        if not parts.get("hostname"):
            return f"{where} names no host"
        vhosts.add(parts.get("virtual_host") or "/")
    if len(vhosts) > 1:
        names = ", ".join(sorted(vhosts))
        return f"the nodes name different virtual hosts ({names}): list the nodes of one cluster"
    return None


def retries_over_nodes(connection: Connection, rounds: int = 1) -> int:
    """kombu's ``max_retries`` for trying each node of ``connection`` ``rounds`` times.

    kombu counts each move to the next node of a multi-node URL as a retry (and pauses only after a
    whole round), so ``max_retries=1`` would never reach a third node.
    """
    return rounds * max(len(connection.alt), 1) - 1
