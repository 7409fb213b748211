"""What quorum queues add to classic ones, checked on the local RabbitMQ: the delivery limit dead-letters a
message returned over and over (at least once, with its reason); delays are whole seconds; a delayed
delivery's routing key still names its queue."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Producer

from kernel.topology import EVENTS_EXCHANGE, QUORUM_DELIVERY_LIMIT, declare_all, source_queue, work_queue
from tasks.retry_policy import RetryPolicy, decide, decide_redelivery
from tests.helpers import wait_for


def test_a_message_returned_past_the_delivery_limit_is_dead_lettered_with_the_reason(new_vhost: str) -> None:
    """A quorum work queue hands a message out QUORUM_DELIVERY_LIMIT + 1 times, then its DLQ has it."""
    with Connection(new_vhost, transport_options={"confirm_publish": True}) as connection:
        declare_all(connection, ["q.limit"], "quorum")
        Producer(connection.default_channel).publish(
            {"n": 1}, exchange=EVENTS_EXCHANGE, routing_key="q.limit"
        )
        channel = connection.channel()
        deliveries = 0
        while (message := channel.basic_get("q.limit", no_ack=False)) is not None:
            deliveries += 1
            channel.basic_reject(message.delivery_tag, requeue=True)
            assert deliveries <= QUORUM_DELIVERY_LIMIT + 1
        dead: Any = wait_for(
            lambda: channel.basic_get("q.limit.dlq", no_ack=True), 10, 0.1, "the dead letter"
        )
    assert deliveries == QUORUM_DELIVERY_LIMIT + 1
    [death] = dead.headers["x-death"]
    assert (death["reason"], death["queue"]) == ("delivery_limit", "q.limit")


def test_quorum_queue_arguments_say_why_in_the_topology() -> None:
    """Quorum work queues dead-letter at least once (which needs reject-publish) and bound deliveries;
    classic ones carry only the dead-letter exchange and routing key."""
    quorum = getattr(work_queue("auth0.s", "quorum"), "queue_arguments", {})
    assert quorum["x-queue-type"] == "quorum"
    assert quorum["x-dead-letter-strategy"] == "at-least-once"
    assert quorum["x-overflow"] == "reject-publish"
    assert quorum["x-delivery-limit"] == QUORUM_DELIVERY_LIMIT
    assert getattr(work_queue("auth0.s", "classic"), "queue_arguments", None) == {
        "x-dead-letter-exchange": "auth0.events.dlx",
        "x-dead-letter-routing-key": "auth0.s",
    }


@pytest.mark.parametrize("asked", [0.05, 0.4, 1.0, 1.7, 299.2])
def test_quorum_retries_wait_whole_seconds(asked: float) -> None:
    """Native delayed delivery delays by whole seconds only (kombu refuses 0.4 s): the policy rounds up."""
    whole = RetryPolicy(2, asked, 300, whole_seconds=True)
    assert whole.backoff(0, rng=lambda: 1.0) == float(-(-asked // 1))
    assert RetryPolicy(2, asked, 300).backoff(0, rng=lambda: 1.0) == asked
    redelivery = decide_redelivery(whole, 0)
    assert redelivery.countdown == int(redelivery.countdown)
    retry = decide(whole, RuntimeError("x"), 0)
    assert retry.countdown == int(retry.countdown)


@given(
    st.integers(min_value=1, max_value=2**28 - 1),
    st.from_regex(r"[a-z0-9_]+(\.[a-z0-9_]+){0,3}", fullmatch=True),
)
def test_a_delayed_routing_key_names_its_queue(countdown: int, queue: str) -> None:
    """kombu's delayed routing key (28 binary digits, then the queue) gives back the queue, once."""
    from kombu.transport.native_delayed_delivery import calculate_routing_key

    assert source_queue(calculate_routing_key(countdown, queue)) == queue
    assert source_queue(queue) == queue


def test_the_backfill_and_stream_watch_publishers_declare_the_configured_type(
    new_vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill's publisher (auth0-events backfill and stream watch) declares quorum queues when the setting
    says quorum: a classic one declared first would refuse every later quorum declarer (406)."""
    from cli.management.wiring import confirmed_publisher
    from kernel.routing import parse_routes
    from kernel.settings import load_settings

    monkeypatch.setenv("BROKER_URL", new_vhost)
    monkeypatch.setenv("AUTH0_EVENTS_QUEUE_TYPE", "quorum")
    settings = load_settings()
    with confirmed_publisher(settings, parse_routes("s=q.filled")):
        pass
    with Connection(new_vhost) as connection:
        # Declaring it again as a quorum queue fails (406 PRECONDITION_FAILED) unless it is one.
        work_queue("q.filled", "quorum")(connection.channel()).declare()
