"""Ingest benchmark: the receiver as production serves it, against two publishers of the same records.

    python -m bench.ingest            # full run, about 4 minutes
    python -m bench.ingest --quick    # CI-sized, about 15 seconds

In one run, on a private vhost whose bench queues nobody consumes (purged between phases), with the same
number of publishing processes (``--processes``, default 2 as the Procfile's WEB_CONCURRENCY) and the same
realistic records (cli.send.samples), in ``--rounds`` alternating rounds:

- **ours**: the Procfile's ``web:`` line (gunicorn with its settings) on localhost; a load client in its own
  process POSTs batches of 100 records over keep-alive connections (``--concurrency``). Accepted events/s
  and per-request latency p50/p95/p99.
- **A, the limit**: plain kombu publishers of persistent, mandatory messages (one per record, the record as
  JSON), confirms awaited per 100, as the receiver awaits them per request, in as many processes as the
  receiver has workers. No HTTP, no task message. **A1**: the same publisher in one process.
- **B, the naive Celery receiver**: ``handle_event.apply_async`` per record with the project's Celery
  configuration (``confirm_publish=True``: one round trip per message, task-sent event included). No HTTP,
  which only flatters B.

Then a latency run of ours at half the maximum rate (open loop). Prints ours/A, ours/A1 and ours/B and the
targets (ours ≥ 0.8 × A, ours ≥ 4 × B, p99 ≤ 50 ms at half rate, receiver RSS ≤ 120 MiB per process) and
writes bench/results/ingest.json (ingest-quick.json with --quick).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from bench import load
from bench.common import (
    BENCH_ROUTES,
    BENCH_TOKEN,
    BenchError,
    CpuMeter,
    RssSampler,
    Service,
    broker_pids,
    chunks,
    jsonl,
    machine_info,
    parser,
    percentiles,
    print_machine,
    print_targets,
    private_vhost,
    purge,
    run_benchmark,
    sample_records,
    start_web,
    web_command,
)

BATCH = 100
TARGETS = {"ours/A": 0.8, "ours/B": 4.0, "p99_ms_at_half_rate": 50.0, "receiver_rss_mib": 120.0}
Pair = tuple[str, dict[str, Any]]


# -- baseline publishers, each in a process of its own ---------------------------------------------------


def plain_kombu_publisher(
    broker_url: str, pairs: Sequence[Pair], offset: int, duration: float, barrier: Barrier
) -> dict[str, Any]:
    """Baseline A: persistent, mandatory messages of the records, confirms awaited per 100."""
    from kombu.connection import Connection
    from kombu.messaging import Producer

    from kernel.topology import EVENTS_EXCHANGE

    with Connection(broker_url) as connection:
        channel = connection.channel()
        channel.confirm_select()
        # Confirms may come out of order across queues: track each delivery tag, as the receiver does.
        outstanding: set[int] = set()
        failures: list[str] = []

        def on_ack(tag: int, multiple: bool) -> None:
            if multiple:
                outstanding.difference_update([t for t in outstanding if t <= tag])
            else:
                outstanding.discard(tag)

        def on_nack(tag: int, multiple: bool) -> None:
            failures.append(f"nack of {tag}")

        def on_return(*_args: Any) -> None:
            failures.append("returned")

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        channel.events["basic_return"].add(on_return)
        producer = Producer(channel, exchange=EVENTS_EXCHANGE, auto_declare=False)
        publish: Callable[..., Any] = producer.publish
        exchange = EVENTS_EXCHANGE.name
        barrier.wait()
        start, cpu = time.monotonic(), time.process_time()
        deadline, count, position = start + duration, 0, offset
        while time.monotonic() < deadline:
            for _ in range(BATCH):
                queue, record = pairs[position % len(pairs)]
                position += 1
                count += 1
                outstanding.add(count)
                publish(
                    record,
                    exchange=exchange,
                    routing_key=queue,
                    serializer="json",
                    delivery_mode=2,
                    mandatory=True,
                    retry=False,
                )
            while outstanding and not failures:
                try:
                    connection.drain_events(timeout=10)
                except TimeoutError as exc:
                    raise BenchError(f"baseline A: {len(outstanding)} unconfirmed after 10 s") from exc
            if failures:
                raise BenchError(f"baseline A: {len(failures)} message(s) refused: {failures[0]}")
        return {"count": count, "start": start, "end": time.monotonic(), "cpu": time.process_time() - cpu}


def naive_celery_publisher(
    broker_url: str, pairs: Sequence[Pair], offset: int, duration: float, barrier: Barrier
) -> dict[str, Any]:
    """Baseline B: ``apply_async`` per record, as the project's Celery app is configured (confirm_publish)."""
    from tasks.event_task import handle_event

    def send(queue: str, record: dict[str, Any]) -> None:
        data = record["data"]
        handle_event.apply_async(
            args=(record,),
            kwargs={
                "event_type": data["type"],
                "log_id": record["log_id"],
                "received_at": datetime.now(UTC).isoformat(),
            },
            queue=queue,
        )

    send(*pairs[offset])  # connects and declares before the clock starts
    barrier.wait()
    start, cpu = time.monotonic(), time.process_time()
    deadline, count, position = start + duration, 0, offset
    while time.monotonic() < deadline:
        for _ in range(BATCH):
            send(*pairs[position % len(pairs)])
            position += 1
            count += 1
    return {"count": count, "start": start, "end": time.monotonic(), "cpu": time.process_time() - cpu}


def _publisher_process(
    target: Callable[..., dict[str, Any]],
    arguments: tuple[Any, ...],
    results: multiprocessing.queues.Queue[dict[str, Any]],
) -> None:
    try:
        results.put(target(*arguments))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        arguments[-1].abort()


def run_publishers(
    target: Callable[..., dict[str, Any]],
    broker_url: str,
    pairs: Sequence[Pair],
    processes: int,
    duration: float,
) -> dict[str, Any]:
    """Run ``target`` in ``processes`` processes at once; events/s from the first start to the last end."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results: multiprocessing.queues.Queue[dict[str, Any]] = context.Queue()
    stride = len(pairs) // processes
    workers = [
        context.Process(
            target=_publisher_process,
            args=(target, (broker_url, pairs, index * stride, duration, barrier), results),
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    # A child that failed before the start breaks the barrier; its error is in results.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=120)
    with CpuMeter({"rabbitmq": broker_pids}) as meter:
        outcomes = [results.get(timeout=duration + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
    if errors:
        raise BenchError(f"{target.__name__} failed: {errors[0]}")
    count = sum(outcome["count"] for outcome in outcomes)
    span = max(outcome["end"] for outcome in outcomes) - min(outcome["start"] for outcome in outcomes)
    meter.used["publishers"] = round(sum(outcome["cpu"] for outcome in outcomes), 2)
    return {
        "events": count,
        "seconds": round(span, 3),
        "events_per_s": round(count / span, 1),
        "cores_used": meter.shares(),
    }


# -- the receiver -----------------------------------------------------------------------------------------

_bodies: list[bytes] = []


def _load_init(bodies: list[bytes]) -> None:
    _bodies[:] = bodies


def _load(base: str, concurrency: int, duration: float, rate: float | None) -> dict[str, Any]:
    return load.run_load(base, _bodies, BENCH_TOKEN, concurrency, duration, rate)


def measured_load(
    executor: ProcessPoolExecutor,
    web: Service,
    base: str,
    concurrency: int,
    duration: float,
    rate: float | None,
) -> dict[str, Any]:
    """One load run against the receiver, with its peak RSS and the cores each party used."""
    groups = {"receiver": lambda: web.processes()[1], "rabbitmq": broker_pids}
    with RssSampler({"web": web}, interval=0.25) as sampler, CpuMeter(groups) as meter:
        result = summarize_load(executor.submit(_load, base, concurrency, duration, rate).result())
    meter.used["load client"] = result.pop("client_cpu_seconds")
    result["cores_used"] = meter.shares()
    result["rss_peak_mib"] = {key: round(value, 1) for key, value in sampler.peaks.items()}
    return result


def summarize_load(result: dict[str, Any]) -> dict[str, Any]:
    """Events/s and latency percentiles of a load run (the raw latencies left out)."""
    if result["failed"]:
        raise BenchError(
            f"{result['failed']} request(s) failed: {result['first_error']} ({result['statuses']})"
        )
    return {
        "events": result["accepted"],
        "requests": result["requests"],
        "seconds": round(result["elapsed"], 3),
        "events_per_s": round(result["accepted"] / result["elapsed"], 1),
        "latency_ms": percentiles(result["latencies_ms"]),
        "connections_opened": result["connections_opened"],
        "client_cpu_seconds": result["cpu_seconds"],
    }


def queued_messages(broker_url: str, queue_names: Sequence[str]) -> int:
    """Messages now in the named queues."""
    from kombu.connection import Connection

    with Connection(broker_url) as connection:
        channel = connection.default_channel
        return sum(channel.queue_declare(name, passive=True).message_count for name in queue_names)


def persistent_sample(broker_url: str, queue_name: str) -> dict[str, Any]:
    """One message of ``queue_name`` (left in place): delivery mode and task header, to show what was sent."""
    from kombu.connection import Connection

    with Connection(broker_url) as connection:
        channel = connection.channel()
        message = channel.basic_get(queue_name, no_ack=False)
        if message is None:
            return {}
        sample = {
            "delivery_mode": message.properties.get("delivery_mode"),
            "task": message.headers.get("task") if message.headers else None,
            "content_type": message.properties.get("content_type"),
        }
        channel.basic_reject(message.delivery_tag, requeue=True)
        channel.close()
        return sample


# -- the run ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    options = parser(__doc__.split("\n\n")[0] if __doc__ else "ingest benchmark")
    options.add_argument("--processes", type=int, default=2, help="gunicorn workers = baseline processes")
    options.add_argument(
        "--concurrency", type=int, default=0, help="HTTP connections (default 2 × processes)"
    )
    options.add_argument("--duration", type=float, default=0, help="seconds per phase (default 12, quick 2)")
    options.add_argument(
        "--rounds", type=int, default=0, help="rounds of A1, A, ours, B (default 3, quick 1)"
    )
    options.add_argument(
        "--gunicorn-args",
        default="",
        help="extra gunicorn options (GUNICORN_CMD_ARGS), e.g. '--worker-class gthread --threads 4'",
    )
    options.add_argument(
        "--queue-type",
        choices=["classic", "quorum"],
        default="classic",
        help="quorum: the receiver on classic and on quorum queues in alternating rounds (not A/ours/B)",
    )
    args = options.parse_args(argv)
    duration = args.duration or (2.0 if args.quick else 12.0)
    rounds = args.rounds or (1 if args.quick else 3)
    concurrency = args.concurrency or 2 * args.processes
    if args.queue_type == "quorum":
        return run_benchmark(
            "ingest-queue-types",
            args,
            lambda scratch: run_queue_types(args, scratch, duration, rounds, concurrency),
        )
    return run_benchmark("ingest", args, lambda scratch: run(args, scratch, duration, rounds, concurrency))


QUEUE_TYPES = ("classic", "quorum")


def run_queue_types(
    args: Any, scratch: Path, duration: float, rounds: int, concurrency: int
) -> dict[str, Any]:
    """The receiver on a vhost of classic queues and on one of quorum queues (one node), rounds alternating
    between them with the same load; returns the JSON payload with quorum's cost as ratios of classic."""
    from kernel.routing import parse_routes

    queues = list(parse_routes(BENCH_ROUTES).queues)
    bodies = [
        jsonl(batch) for batch in chunks(sample_records(4_000 if args.quick else 20_000, args.seed), BATCH)
    ]
    with contextlib.ExitStack() as stack:
        urls = {kind: stack.enter_context(private_vhost(f"ingest-{kind}")) for kind in QUEUE_TYPES}
        info = machine_info(urls["classic"])
        print_machine(info)
        webs: dict[str, tuple[Service, str]] = {}
        for kind in QUEUE_TYPES:
            env = {
                "BROKER_URL": urls[kind],
                "AUTH0_EVENTS_QUEUE_TYPE": kind,
                "AUTH0_LOG_STREAM_TOKENS": BENCH_TOKEN,
                "AUTH0_EVENTS_ROUTES": BENCH_ROUTES,
                "DATABASE_URL": f"sqlite:///{scratch / 'ledger.sqlite3'}",
                "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics"),
            }
            (scratch / kind).mkdir()
            webs[kind] = start_web(env, scratch / kind, args.processes)
            stack.callback(webs[kind][0].stop)
        executor = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_load_init, initargs=(bodies,)
        )
        stack.callback(executor.shutdown)
        per_round: list[dict[str, Any]] = []
        for kind in QUEUE_TYPES:  # warm-up: each receiver process connects and declares
            summarize_load(executor.submit(_load, webs[kind][1], concurrency, 1.0, None).result())
        for number in range(1, rounds + 1):
            result: dict[str, Any] = {}
            for kind in QUEUE_TYPES if number % 2 else reversed(QUEUE_TYPES):
                purge(urls[kind], queues)
                result[kind] = measured_load(executor, *webs[kind], concurrency, duration, None)
                purge(urls[kind], queues)
            result["quorum/classic"] = round(
                result["quorum"]["events_per_s"] / result["classic"]["events_per_s"], 3
            )
            per_round.append(result)
            print(
                f"round {number}: classic {result['classic']['events_per_s']:,.0f} events/s, "
                f"quorum {result['quorum']['events_per_s']:,.0f} events/s "
                f"(quorum/classic {result['quorum/classic']:.2f})",
                flush=True,
            )
    summary: dict[str, dict[str, Any]] = {
        kind: {
            "events_per_s": round(float(statistics.median(r[kind]["events_per_s"] for r in per_round)), 1),
            "latency_ms": {
                key: round(float(statistics.median(r[kind]["latency_ms"][key] for r in per_round)), 1)
                for key in ("p50", "p95", "p99")
            },
        }
        for kind in QUEUE_TYPES
    }
    ratio = round(float(statistics.median(r["quorum/classic"] for r in per_round)), 3)
    print(f"\n{'queues':<10}{'events/s':>12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind in QUEUE_TYPES:
        latency = summary[kind]["latency_ms"]
        print(
            f"{kind:<10}{summary[kind]['events_per_s']:>12,.0f}"
            + "".join(f"{latency[key]:>9.1f}" for key in ("p50", "p95", "p99"))
        )
    print(f"quorum/classic (median of the rounds'): {ratio:.2f}")
    return {
        "benchmark": "ingest-queue-types",
        "machine": info,
        "settings": {
            "publishing_processes": args.processes,
            "connections": concurrency,
            "batch": BATCH,
            "seconds_per_phase": duration,
            "rounds": rounds,
        },
        "receiver": summary,
        "ratios": {"quorum/classic": ratio},
        "rounds": per_round,
    }


def run(args: Any, scratch: Path, duration: float, rounds: int, concurrency: int) -> dict[str, Any]:
    """Every phase of the benchmark on a private vhost; returns the JSON payload."""
    with private_vhost("ingest") as broker_url:
        env = {
            "BROKER_URL": broker_url,
            "AUTH0_LOG_STREAM_TOKENS": BENCH_TOKEN,
            "AUTH0_EVENTS_ROUTES": BENCH_ROUTES,
            "DATABASE_URL": f"sqlite:///{scratch / 'ledger.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics"),
        }
        os.environ.update(env)  # read by tasks.* in this process and in the baseline processes
        info = machine_info(broker_url)
        print_machine(info)
        from kernel.routing import parse_routes

        routes = parse_routes(BENCH_ROUTES)
        records = sample_records(4_000 if args.quick else 20_000, args.seed)
        pairs: list[Pair] = [(str(routes.queue_for(r["data"]["type"])), r) for r in records]
        bodies = [jsonl(batch) for batch in chunks(records, BATCH)]
        body_kib = statistics.fmean(len(body) for body in bodies) / 1024
        print(
            f"ingest: {args.processes} publishing processes, {concurrency} connections, "
            f"{duration:g} s per phase, "
            f"{rounds} round(s); {len(records)} records, {BATCH} per request ({body_kib:.0f} KiB)",
            flush=True,
        )
        extra = {"GUNICORN_CMD_ARGS": args.gunicorn_args} if args.gunicorn_args else {}
        web, base = start_web(env, scratch, args.processes, extra)
        context = multiprocessing.get_context("spawn")
        try:
            executor = ProcessPoolExecutor(1, mp_context=context, initializer=_load_init, initargs=(bodies,))
        except BaseException:
            web.stop()
            raise
        queues = list(routes.queues)
        per_round: list[dict[str, Any]] = []
        try:
            summarize_load(executor.submit(_load, base, concurrency, 1.0, None).result())  # warm-up
            for number in range(1, rounds + 1):
                result: dict[str, Any] = {}
                purge(broker_url, queues)
                result["A1"] = run_publishers(plain_kombu_publisher, broker_url, pairs, 1, duration)
                result["A1"]["queued"] = queued_messages(broker_url, queues)
                purge(broker_url, queues)
                result["A"] = run_publishers(
                    plain_kombu_publisher, broker_url, pairs, args.processes, duration
                )
                result["A"]["queued"] = queued_messages(broker_url, queues)
                purge(broker_url, queues)
                result["ours"] = measured_load(executor, web, base, concurrency, duration, None)
                result["ours"]["queued"] = queued_messages(broker_url, queues)
                result["ours"]["message"] = persistent_sample(broker_url, pairs[0][0])
                purge(broker_url, queues)
                result["B"] = run_publishers(
                    naive_celery_publisher, broker_url, pairs, args.processes, duration
                )
                result["B"]["queued"] = queued_messages(broker_url, queues)
                purge(broker_url, queues)
                per_round.append(result)
                print(f"round {number}:", flush=True)
                for phase in ("A1", "A", "ours", "B"):
                    cores = ", ".join(f"{k} {v:.2f}" for k, v in result[phase]["cores_used"].items())
                    print(
                        f"  {phase:<5}{result[phase]['events_per_s']:>9,.0f} events/s; cores used: {cores}",
                        flush=True,
                    )
            ours_rate = statistics.median(r["ours"]["events_per_s"] for r in per_round)
            half_requests = ours_rate / 2 / BATCH
            half = measured_load(executor, web, base, concurrency, duration, half_requests)
            half["target_events_per_s"] = round(ours_rate / 2, 1)
            purge(broker_url, queues)
        finally:
            try:
                executor.shutdown()
            finally:
                web.stop()
    return report(info, args, per_round, half, duration, rounds, concurrency)


def report(
    info: dict[str, Any],
    args: Any,
    per_round: list[dict[str, Any]],
    half: dict[str, Any],
    duration: float,
    rounds: int,
    concurrency: int,
) -> dict[str, Any]:
    """Print the summary and the targets; return the JSON payload."""

    def median(phase: str) -> float:
        return round(float(statistics.median(r[phase]["events_per_s"] for r in per_round)), 1)

    ours, a, a1, b = median("ours"), median("A"), median("A1"), median("B")
    # Each round runs A, ours and B back to back, so a round's ratios compare like with like even when
    # the machine's other load drifts between rounds; the ratios reported are the medians of the rounds'.
    for result in per_round:
        result["ratios"] = {
            "ours/A": round(result["ours"]["events_per_s"] / result["A"]["events_per_s"], 3),
            "ours/A1": round(result["ours"]["events_per_s"] / result["A1"]["events_per_s"], 3),
            "ours/B": round(result["ours"]["events_per_s"] / result["B"]["events_per_s"], 3),
        }
    ratio_a = round(float(statistics.median(r["ratios"]["ours/A"] for r in per_round)), 3)
    ratio_b = round(float(statistics.median(r["ratios"]["ours/B"] for r in per_round)), 3)
    ratio_a1 = round(float(statistics.median(r["ratios"]["ours/A1"] for r in per_round)), 3)
    latencies = [r["ours"]["latency_ms"] for r in per_round]
    rss = max(
        [r["ours"]["rss_peak_mib"].get("web.child", 0.0) for r in per_round]
        + [half["rss_peak_mib"].get("web.child", 0.0)]
    )
    targets = {
        "ours/A >= 0.8": ratio_a >= TARGETS["ours/A"],
        "ours/B >= 4": ratio_b >= TARGETS["ours/B"],
        "p99 <= 50 ms at half the maximum rate": half["latency_ms"]["p99"] <= TARGETS["p99_ms_at_half_rate"],
        "receiver RSS <= 120 MiB per process": 0 < rss <= TARGETS["receiver_rss_mib"],
    }
    print()
    print(f"{'phase':<34}{'events/s':>12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    print(f"{'A1 plain kombu, 1 process':<34}{a1:>12,.0f}")
    print(f"{f'A  plain kombu, {args.processes} processes':<34}{a:>12,.0f}")
    print(
        f"{'ours  gunicorn receiver':<34}{ours:>12,.0f}"
        + "".join(
            f"{statistics.median(lat[key] for lat in latencies):>9.1f}" for key in ("p50", "p95", "p99")
        )
    )
    print(f"{'B  apply_async, confirm_publish':<34}{b:>12,.0f}")
    print(
        f"{'ours at half the maximum rate':<34}{half['events_per_s']:>12,.0f}"
        + "".join(f"{half['latency_ms'][key]:>9.1f}" for key in ("p50", "p95", "p99"))
    )
    rounds_a = ", ".join(f"{r['ratios']['ours/A']:.2f}" for r in per_round)
    rounds_b = ", ".join(f"{r['ratios']['ours/B']:.2f}" for r in per_round)
    rounds_a1 = ", ".join(f"{r['ratios']['ours/A1']:.2f}" for r in per_round)
    print(
        f"ratios (median of the rounds'): ours/A = {ratio_a:.2f} ({rounds_a}), "
        f"ours/A1 = {ratio_a1:.2f} ({rounds_a1}), "
        f"ours/B = {ratio_b:.2f} ({rounds_b}); receiver peak RSS {rss:.0f} MiB per process"
    )
    print_targets(targets)
    return {
        "benchmark": "ingest",
        "machine": info,
        "settings": {
            "publishing_processes": args.processes,
            "connections": concurrency,
            "batch": BATCH,
            "seconds_per_phase": duration,
            "rounds": rounds,
            "web": web_command(),
            "gunicorn_cmd_args": args.gunicorn_args,
        },
        "events_per_s": {"ours": ours, "A": a, "A1": a1, "B": b},
        "ratios": {"ours/A": ratio_a, "ours/A1": ratio_a1, "ours/B": ratio_b},
        "ratios_of_median_rates": {
            "ours/A": round(ours / a, 3) if a else 0.0,
            "ours/A1": round(ours / a1, 3) if a1 else 0.0,
            "ours/B": round(ours / b, 3) if b else 0.0,
        },
        "half_rate": half,
        "receiver_rss_peak_mib": round(rss, 1),
        "targets": targets,
        "rounds": per_round,
    }


if __name__ == "__main__":
    sys.exit(main())
