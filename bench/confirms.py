"""Confirm-latency benchmark: how long RabbitMQ takes to confirm a receiver-sized batch, CQ v1 against v2.

    python -m bench.confirms            # full run, about 1 minute
    python -m bench.confirms --quick    # CI-sized, a few seconds

No code of ours: a plain py-amqp publisher sends batches of 100 persistent messages of a task message's
size, spread over 15 durable queues as a realistic batch is, at ``--rate`` batches per second (open loop),
and waits for every confirm of a batch before the next. The same run measures queues of classic queue
version 1 (RabbitMQ 3.10's default) and version 2 (set by a policy on the run's vhost), alternating
``--rounds`` times. It is the floor under the receiver's request latency (bench/ingest.py's half-rate
phase) and shows what the broker's queue version does to its tail.

Prints p50/p95/p99/max of the confirm wait per version; target: p99 ≤ 50 ms (the receiver's p99 target,
which cannot be met when the broker alone misses it). Writes bench/results/confirms.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

from bench.common import (
    BenchError,
    machine_info,
    parser,
    percentiles,
    print_machine,
    print_targets,
    private_vhost,
    run_benchmark,
)

BATCH = 100
QUEUES = 15
BODY = b"x" * 900  # about a task message of a realistic record
TARGET_P99_MS = 50.0
VERSIONS = (1, 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    options = parser(__doc__.split("\n\n")[0] if __doc__ else "confirms benchmark")
    options.add_argument("--rate", type=float, default=20.0, help="batches per second (default 20)")
    options.add_argument("--batches", type=int, default=0, help="batches per round (default 300, quick 40)")
    options.add_argument("--rounds", type=int, default=0, help="rounds of v1 then v2 (default 2, quick 1)")
    args = options.parse_args(argv)
    batches = args.batches or (40 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 2)
    return run_benchmark("confirms", args, lambda _scratch: run(args.rate, batches, rounds))


def run(rate: float, batches: int, rounds: int) -> dict[str, Any]:
    """Every round on a private vhost whose ``v2.*`` queues are version 2; returns the JSON payload."""
    with private_vhost("confirms") as broker_url:
        info = machine_info(broker_url)
        print_machine(info)
        set_version_policy(broker_url)
        print(f"confirms: {batches} batches of {BATCH} persistent messages over {QUEUES} queues at {rate}/s")
        waits: dict[int, list[float]] = {version: [] for version in VERSIONS}
        for round_number in range(1, rounds + 1):
            for version in VERSIONS:
                round_waits = publish_batches(broker_url, version, batches, rate)
                waits[version].extend(round_waits)
                figures = percentiles(round_waits)
                print(f"  round {round_number}, CQ v{version}: {describe(figures)}")
    results = {f"v{version}": percentiles(values) for version, values in waits.items()}
    targets = {
        f"p99 <= {TARGET_P99_MS:g} ms, CQ v{version}": results[f"v{version}"]["p99"] <= TARGET_P99_MS
        for version in VERSIONS
    }
    for version in VERSIONS:
        print(f"CQ v{version}, all rounds: {describe(results[f'v{version}'])}")
    print_targets(targets)
    return {
        "benchmark": "confirms",
        "machine": info,
        "settings": {"batch": BATCH, "queues": QUEUES, "batches_per_round": batches, "rate": rate},
        "confirm_wait_ms": results,
        "targets": targets,
    }


def describe(figures: dict[str, float]) -> str:
    """One line of a latency summary in milliseconds."""
    return ", ".join(f"{name} {figures[name]:.1f}" for name in ("p50", "p95", "p99", "max")) + " ms"


def set_version_policy(broker_url: str) -> None:
    """Make the vhost's ``v2.*`` queues classic queues of version 2 (RabbitMQ ≥ 3.10)."""
    vhost = unquote(urlsplit(broker_url).path.lstrip("/")) or "/"
    result = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "set_policy",
            "-p",
            vhost,
            "--apply-to",
            "queues",
            "bench-cq-v2",
            r"^v2\.",
            '{"queue-version": 2}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise BenchError(f"rabbitmqctl set_policy failed: {result.stderr.strip() or result.stdout.strip()}")


def publish_batches(broker_url: str, version: int, batches: int, rate: float) -> list[float]:
    """Publish ``batches`` batches to the ``v<version>.*`` queues; return each batch's confirm wait (ms)."""
    parts = urlsplit(broker_url)
    connection = amqp.Connection(
        f"{parts.hostname}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path.lstrip("/")) or "/",
    )
    connection.connect()
    queues = [f"v{version}.q{index}" for index in range(QUEUES)]
    try:
        channel = connection.channel()
        for name in queues:
            channel.queue_declare(name, durable=True, auto_delete=False)
        try:
            return _timed_batches(connection, channel, queues, batches, rate)
        finally:
            for name in queues:
                channel.queue_delete(name)
    finally:
        connection.close()


def _timed_batches(
    connection: amqp.Connection, channel: Any, queues: list[str], batches: int, rate: float
) -> list[float]:
    # py-amqp waits for each confirm when confirm_publish is on; counting basic.ack ourselves lets a batch
    # be written first and its confirms awaited together, as the receiver does.
    acked = [0]

    def on_ack(delivery_tag: int, multiple: bool) -> None:
        acked[0] = max(acked[0], delivery_tag)

    def on_nack(delivery_tag: int, multiple: bool) -> None:
        raise BenchError(f"RabbitMQ refused message {delivery_tag} (basic.nack)")

    channel.confirm_select()
    channel.events["basic_ack"].add(on_ack)
    channel.events["basic_nack"].add(on_nack)
    sent, waits, start = 0, [], time.perf_counter()
    for number in range(batches):
        due = start + number / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        began = time.perf_counter()
        for index in range(BATCH):
            channel.basic_publish(amqp.Message(BODY, delivery_mode=2), routing_key=queues[index % QUEUES])
            sent += 1
        deadline = began + 30
        while acked[0] < sent:
            if time.perf_counter() > deadline:
                raise BenchError(f"RabbitMQ did not confirm a batch within 30 s ({acked[0]} of {sent})")
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                continue
        waits.append((time.perf_counter() - began) * 1000)
    return waits


if __name__ == "__main__":
    sys.exit(main())
