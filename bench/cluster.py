"""Cluster benchmark: the receiver's ingest into one node (classic, then quorum) and into a cluster of three.

    python -m bench.cluster            # about 3 minutes, the cluster's start included
    python -m bench.cluster --quick    # CI-sized, about a minute

In one run, with the same receiver (the Procfile's web line, ``--processes`` gunicorn workers), the same
realistic records in batches of 100 and the same load client (closed loop, ``--concurrency`` keep-alive
connections), in ``--rounds`` alternating rounds of ``--duration`` seconds each:

- **classic**: one node of the run's own (tests/rabbitmq_node.py), AUTH0_EVENTS_QUEUE_TYPE=classic;
- **quorum**: the same node, another vhost, AUTH0_EVENTS_QUEUE_TYPE=quorum;
- **cluster**: three nodes of the run's own, clustered, quorum queues, BROKER_URL listing the three (the
  receiver connects to the first; the queues' leaders are there too).

Each phase reports accepted events/s, latency percentiles, and the CPU the RabbitMQ nodes spent per
thousand events, in total and on the busiest node: that cost, not this machine's throughput (the three
nodes share its cores with everything else), says how many cores, hence nodes, an event rate needs.
Writes bench/results/cluster.json (cluster-quick.json with --quick).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench import load
from bench.common import (
    BENCH_ROUTES,
    BENCH_TOKEN,
    BenchError,
    CpuMeter,
    broker_pids,
    chunks,
    jsonl,
    machine_info,
    parser,
    percentiles,
    print_machine,
    purge,
    run_benchmark,
    sample_records,
    start_web,
)

BATCH = 100
PHASES = ("classic", "quorum", "cluster")
_bodies: list[bytes] = []


def _load_init(bodies: list[bytes]) -> None:
    _bodies[:] = bodies


def _load(base: str, concurrency: int, duration: float) -> dict[str, Any]:
    return load.run_load(base, _bodies, BENCH_TOKEN, concurrency, duration)


def node_vm(node: Any) -> list[int]:
    """The Erlang VM of one of the run's nodes: the beam.smp in the process group its start script leads."""
    return [pid for pid in broker_pids() if os.getpgid(pid) == node.process.pid]


@contextmanager
def one_node(scratch: Path) -> Iterator[tuple[Any, str, str]]:
    """A node of the run's own with a vhost for classic and one for quorum queues (the machine's node
    serves other people's runs too, whose work would count in its CPU); removed afterwards."""
    from tests.rabbitmq_node import NodeError, RabbitNode

    node = RabbitNode(scratch / "node")
    try:
        node.start()
        for vhost in ("classic", "quorum"):
            node.ctl("add_vhost", vhost)
            node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except NodeError as exc:
        node.remove()
        raise BenchError(f"cannot start a RabbitMQ node: {exc}") from exc
    base = node.url.removesuffix("//")
    try:
        yield node, f"{base}/classic", f"{base}/quorum"
    finally:
        node.remove()


@contextmanager
def three_nodes(scratch: Path) -> Iterator[Any]:
    """A three-node cluster of the run's own (the tests' helper), removed afterwards."""
    from tests.rabbitmq_node import NodeError, RabbitCluster

    cluster = RabbitCluster(scratch / "cluster")
    try:
        cluster.start()
    except NodeError as exc:
        cluster.remove()
        raise BenchError(f"cannot start a three-node cluster: {exc}") from exc
    try:
        yield cluster
    finally:
        cluster.remove()


def measure(
    executor: ProcessPoolExecutor,
    base: str,
    concurrency: int,
    duration: float,
    nodes: dict[str, Callable[[], list[int]]],
) -> dict[str, Any]:
    """One closed-loop load run: events/s, latency, and the CPU seconds each RabbitMQ node used."""
    with CpuMeter(nodes) as meter:
        result = executor.submit(_load, base, concurrency, duration).result()
    if result["failed"]:
        raise BenchError(
            f"{result['failed']} request(s) failed: {result['first_error']} ({result['statuses']})"
        )
    events = result["accepted"]
    node_seconds = {name: meter.used[name] for name in nodes}
    per_thousand = {name: round(1000 * used / max(events, 1), 3) for name, used in node_seconds.items()}
    return {
        "events": events,
        "events_per_s": round(events / result["elapsed"], 1),
        "latency_ms": percentiles(result["latencies_ms"]),
        "broker_cpu_s_per_1000_events": round(sum(per_thousand.values()), 3),
        "busiest_node_cpu_s_per_1000_events": max(per_thousand.values()),
        "node_cpu_s_per_1000_events": per_thousand,
        "cores_used": meter.shares(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran."""
    options = parser(__doc__.split("\n\n")[0] if __doc__ else "cluster benchmark")
    options.add_argument("--processes", type=int, default=2, help="gunicorn workers (default 2)")
    options.add_argument("--concurrency", type=int, default=4, help="HTTP connections (default 4)")
    options.add_argument("--duration", type=float, default=0, help="seconds per phase (default 10, quick 2)")
    options.add_argument(
        "--rounds", type=int, default=0, help="rounds of the three phases (default 2, quick 1)"
    )
    args = options.parse_args(argv)
    duration = args.duration or (2.0 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 2)
    return run_benchmark("cluster", args, lambda scratch: run(args, scratch, duration, rounds))


def run(args: Any, scratch: Path, duration: float, rounds: int) -> dict[str, Any]:
    """Start the three receivers (one per phase) and alternate the phases; returns the JSON payload."""
    from kernel.routing import parse_routes

    queues = list(parse_routes(BENCH_ROUTES).queues)
    records = sample_records(2_000 if args.quick else 10_000, args.seed)
    bodies = [jsonl(batch) for batch in chunks(records, BATCH)]
    base_env = {
        "AUTH0_LOG_STREAM_TOKENS": BENCH_TOKEN,
        "AUTH0_EVENTS_ROUTES": BENCH_ROUTES,
        "DATABASE_URL": f"sqlite:///{scratch / 'ledger.sqlite3'}",
    }
    per_round: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with (
        one_node(scratch) as (node, classic_url, quorum_url),
        three_nodes(scratch) as cluster,
        ProcessPoolExecutor(1, mp_context=context, initializer=_load_init, initargs=(bodies,)) as executor,
    ):
        info = machine_info(classic_url)
        print_machine(info)
        print(
            f"cluster: {args.processes} receiver processes, {args.concurrency} connections, "
            f"{duration:g} s per phase, {rounds} round(s); {len(records)} records, {BATCH} per request",
            flush=True,
        )
        single: dict[str, Callable[[], list[int]]] = {"node": partial(node_vm, node)}
        three: dict[str, Callable[[], list[int]]] = {
            f"node{n}": partial(node_vm, node) for n, node in enumerate(cluster.nodes, 1)
        }
        # Each phase: its BROKER_URL, its queue type, and the RabbitMQ nodes whose CPU it counts.
        phases: dict[str, tuple[str, str, dict[str, Callable[[], list[int]]]]] = {
            "classic": (classic_url, "classic", single),
            "quorum": (quorum_url, "quorum", single),
            "cluster": (cluster.url, "quorum", three),
        }
        services = {}
        try:
            for name, (url, queue_type, _nodes) in phases.items():
                env = {
                    **base_env,
                    "BROKER_URL": url,
                    "AUTH0_EVENTS_QUEUE_TYPE": queue_type,
                    "PROMETHEUS_MULTIPROC_DIR": str(scratch / f"metrics-{name}"),
                }
                (scratch / f"web-{name}").mkdir()
                services[name] = start_web(env, scratch / f"web-{name}", args.processes)
            for number in range(1, rounds + 1):
                result = {}
                for name, (url, _queue_type, nodes) in phases.items():
                    _web, base = services[name]
                    executor.submit(_load, base, args.concurrency, 0.5).result()  # warm-up
                    purge(url, queues)
                    result[name] = measure(executor, base, args.concurrency, duration, nodes)
                    purge(url, queues)
                per_round.append(result)
                print(f"round {number}:", flush=True)
                for name in PHASES:
                    phase = result[name]
                    print(
                        f"  {name:<8}{phase['events_per_s']:>9,.0f} events/s, "
                        f"p99 {phase['latency_ms']['p99']:.0f} ms; "
                        f"RabbitMQ {phase['broker_cpu_s_per_1000_events']:.2f} CPU s per 1000 events "
                        f"(busiest node {phase['busiest_node_cpu_s_per_1000_events']:.2f})",
                        flush=True,
                    )
        finally:
            for web, _base in services.values():
                web.stop()
    return report(info, args, per_round, duration, rounds)


def report(
    info: dict[str, Any], args: Any, per_round: list[dict[str, Any]], duration: float, rounds: int
) -> dict[str, Any]:
    """Medians over the rounds, each phase against one-node classic of the same round; the JSON payload."""

    def median(phase: str, key: str) -> float:
        return round(float(statistics.median(r[phase][key] for r in per_round)), 3)

    summary = {
        name: {
            "events_per_s": median(name, "events_per_s"),
            "vs_classic": round(
                float(
                    statistics.median(
                        r[name]["events_per_s"] / r["classic"]["events_per_s"] for r in per_round
                    )
                ),
                3,
            ),
            "broker_cpu_s_per_1000_events": median(name, "broker_cpu_s_per_1000_events"),
            "busiest_node_cpu_s_per_1000_events": median(name, "busiest_node_cpu_s_per_1000_events"),
            # A node of one core at full use takes this many events/s, by the busiest node's cost.
            "events_per_s_per_core_of_busiest_node": round(
                1000 / max(median(name, "busiest_node_cpu_s_per_1000_events"), 0.001), 0
            ),
        }
        for name in PHASES
    }
    print("summary (medians of the rounds; vs_classic is the same round's ratio):")
    for name, figures in summary.items():
        print(f"  {name:<8}" + ", ".join(f"{key} {value:g}" for key, value in figures.items()))
    return {
        "machine": info,
        "parameters": {
            "processes": args.processes,
            "concurrency": args.concurrency,
            "duration_s": duration,
            "rounds": rounds,
            "batch": BATCH,
        },
        "summary": summary,
        "rounds": per_round,
    }


if __name__ == "__main__":
    raise SystemExit(main())
