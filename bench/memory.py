"""Memory benchmark: peak RSS of the receiver and the workers, and a soak that shows whether memory grows.

    python -m bench.memory            # 200,000 events through the whole pipeline (the workers set the pace)
    python -m bench.memory --quick    # CI-sized: 1,000 events

On a private vhost with the default routes, the Procfile's ``web:`` line and its worker lines (as honcho
starts them), ledger on SQLite (``--database postgresql`` for PostgreSQL):

1. **Receiver peaks**, before any worker runs: 100-record batches at full speed over 4 connections, then a
   few requests near the receiver's body limit (AUTH0_EVENTS_MAX_BODY_BYTES, 10 MiB by default); the queues
   are purged afterwards.
2. **Soak**: ``--events`` new realistic records posted in batches of 100, never more than ``--backlog``
   ahead of what the ledger shows as processed, until every one is processed. The RSS of every receiver and
   worker process is sampled each second against the number processed.

For each process, a least-squares line of RSS against events processed after the warm-up (the first 20%,
or the events of the first AUTH0_EVENTS_TASK_TIME_LIMIT seconds if more: see ``warm_up_end``) gives its
growth in MiB per 100,000 events; the whole run's RSS is in the JSON too. Targets: receiver ≤ 120 MiB
per process; no growth, taken as less than 5 MiB per 100,000 events for every process. Writes
bench/results/memory.json (memory-quick.json).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load
from bench.common import (
    BENCH_TOKEN,
    BenchError,
    Service,
    chunks,
    jsonl,
    machine_info,
    parser,
    percentiles,
    print_machine,
    print_targets,
    private_postgres,
    private_vhost,
    purge,
    rss_mib,
    run_benchmark,
    sample_records,
    slope,
    start_web,
    start_workers,
    stop_all,
    web_command,
)
from bench.end_to_end import ledger_processed, ledger_states

BATCH = 100
RECEIVER_LIMIT_MIB = 120.0
GROWTH_LIMIT_MIB_PER_100K = 5.0
WARM_UP_FRACTION = 0.2


def processes_of(services: dict[str, Service]) -> dict[int, str]:
    """Every process of the services, by pid, labelled ``<service>.main`` or ``<service>.child``."""
    labels = {}
    for name, service in services.items():
        main, children = service.processes()
        if main:
            labels[main] = f"{name}.main"
        for child in children:
            labels[child] = f"{name}.child"
    return labels


class Sampler(threading.Thread):
    """Every ``interval`` s: the RSS of each process and how many events the ledger shows as processed."""

    def __init__(self, services: dict[str, Service], database_url: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.database_url = database_url
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.labels: dict[int, str] = {}
        self.processed = 0
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        """Sample until stopped."""
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        """Take one sample."""
        self.labels.update(processes_of(self.services))
        self.processed = ledger_processed(self.database_url)
        rss = {pid: rss_mib(pid) for pid in self.labels}
        self.samples.append(
            {
                "t": round(time.monotonic() - self._t0, 1),
                "processed": self.processed,
                "rss": {str(pid): round(value, 2) for pid, value in rss.items() if value is not None},
            }
        )

    def stop(self) -> None:
        """Stop and take a last sample."""
        self.halt()
        self.sample()

    def halt(self) -> None:
        """Stop sampling (if it runs)."""
        self._stop_event.set()
        if self.is_alive():
            self.join()


def warm_up_end(samples: list[dict[str, Any]], events: int, time_limit: float) -> float:
    """Events processed when the warm-up ends: 20% of them, or later, once the task time limit has passed.

    A worker's consumer keeps two timer entries per task (the soft and hard time limits, billiard's pool on
    kombu's timer heap) until they are due, even after the task finished: its memory rises for the first
    ``time_limit`` seconds of traffic and is flat after (tracemalloc, BENCHMARKS.md). Growth is measured
    after that, when the soak is long enough to leave a window.
    """
    started = next((sample["t"] for sample in samples if sample["processed"] > 0), None)
    by_fraction = WARM_UP_FRACTION * events
    if started is None:
        return by_fraction
    after_limit = next((s["processed"] for s in samples if s["t"] >= started + time_limit), None)
    if after_limit is None or after_limit > 0.8 * events:
        return by_fraction
    return max(by_fraction, float(after_limit))


def growth(
    samples: list[dict[str, Any]], labels: dict[int, str], events: int, after: float
) -> dict[str, Any]:
    """Per process: peak, RSS at the start and end of the measured window, fitted MiB per 100,000 events."""
    window = [sample for sample in samples if sample["processed"] >= after]
    per_process = {}
    for pid, label in sorted(labels.items(), key=lambda item: item[1]):
        key = str(pid)
        points = [(s["processed"], s["rss"][key]) for s in window if key in s["rss"]]
        everything = [s["rss"][key] for s in samples if key in s["rss"]]
        if not everything:
            continue
        entry: dict[str, Any] = {"role": label, "peak_mib": round(max(everything), 1)}
        if len(points) >= 3:
            head = statistics.median(value for _, value in points[: max(1, len(points) // 10)])
            tail = statistics.median(value for _, value in points[-max(1, len(points) // 10) :])
            last_quarter = [(x, y) for x, y in points if x >= 0.75 * events]
            entry.update(
                {
                    "window_start_mib": round(head, 1),
                    "window_end_mib": round(tail, 1),
                    "mib_per_100k_events": round(slope(points) * 100_000, 2),
                    # Tells growth that stops (a cache filling up) from growth that goes on.
                    "last_quarter_mib_per_100k_events": round(slope(last_quarter) * 100_000, 2),
                    "samples": len(points),
                }
            )
        per_process[key] = entry
    return per_process


def receiver_peaks(
    base: str, web: Service, records: list[dict[str, Any]], big_records: list[dict[str, Any]], quick: bool
) -> dict[str, Any]:
    """Full-speed batches, then bodies near the limit; the receiver's peak RSS per process during each."""
    results: dict[str, Any] = {}
    bodies = [jsonl(batch) for batch in chunks(records, BATCH)]
    big = jsonl(big_records)
    for name, payloads, duration, concurrency in (
        ("batches of 100 at full speed", bodies, 1.5 if quick else 8.0, 4),
        (f"bodies of {len(big) / 2**20:.1f} MiB ({len(big_records)} records)", [big], 0.0, 1),
    ):
        peak: dict[int, float] = {}
        stop = threading.Event()

        def watch(peak: dict[int, float] = peak, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                for pid in web.processes()[1]:
                    value = rss_mib(pid)
                    if value is not None:
                        peak[pid] = max(peak.get(pid, 0.0), value)
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        requests = None if duration else (1 if quick else 3)
        outcome = load.run_load(
            base, payloads, BENCH_TOKEN, concurrency, duration or 600.0, max_requests=requests
        )
        stop.set()
        watcher.join()
        if outcome["failed"]:
            raise BenchError(f"receiver peaks, {name}: {outcome['first_error']}")
        results[name] = {
            "requests": outcome["requests"],
            "events": outcome["accepted"],
            "latency_ms": percentiles(outcome["latencies_ms"]),
            "peak_rss_mib_per_process": [round(value, 1) for value in peak.values()],
        }
        print(
            f"  receiver, {name}: {outcome['requests']} requests, peak RSS per process "
            + ", ".join(f"{value:.0f}" for value in peak.values())
            + " MiB",
            flush=True,
        )
    return results


def soak(
    base: str,
    sampler: Sampler,
    services: Sequence[Service],
    events: int,
    backlog: int,
    seed: int,
    accept: Any,
    timeout: float,
) -> dict[str, Any]:
    """Post ``events`` new records, at most ``backlog`` ahead of the ledger; wait until all are processed."""
    from cli.send.samples import SampleGenerator

    generator = SampleGenerator(seed=seed + 1)
    posted, started, chunk = 0, time.monotonic(), 10 * BATCH
    latencies: list[float] = []
    last_report = started
    baseline = sampler.processed
    while posted < events:
        for service in services:
            service.check_alive()
        if posted - (sampler.processed - baseline) > backlog:
            time.sleep(0.1)
            continue
        records: list[dict[str, Any]] = []
        while len(records) < min(chunk, events - posted):
            record = generator.record()
            if accept(record["data"]["type"]):
                records.append(record)
        outcome = load.run_load(
            base,
            [jsonl(b) for b in chunks(records, BATCH)],
            BENCH_TOKEN,
            2,
            600.0,
            max_requests=-(-len(records) // BATCH),
        )
        if outcome["failed"]:
            raise BenchError(f"soak: {outcome['failed']} request(s) failed: {outcome['first_error']}")
        latencies += outcome["latencies_ms"]
        posted += len(records)
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            print(f"  soak: {posted:,} posted, {sampler.processed - baseline:,} processed", flush=True)
    deadline = time.monotonic() + timeout
    while sampler.processed - baseline < events:
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"soak: only {sampler.processed - baseline} of {events} processed after {timeout:.0f} s"
            )
        time.sleep(0.2)
    seconds = time.monotonic() - started
    return {
        "events": events,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds, 1),
        "request_latency_ms": percentiles(latencies),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    options = parser(__doc__.split("\n\n")[0] if __doc__ else "memory benchmark")
    options.add_argument("--events", type=int, default=0, help="soak events (default 200000, quick 1000)")
    options.add_argument("--backlog", type=int, default=3000, help="most events posted ahead of processed")
    options.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite", help="the ledger")
    args = options.parse_args(argv)
    # 200,000 rather than 100,000: at 300+ events/s the latter ends inside the first 300 s (the task time
    # limit), the consumer's warm-up, and leaves no window to measure growth in (see warm_up_end).
    events = args.events or (1000 if args.quick else 200_000)
    return run_benchmark("memory", args, lambda scratch: run(args, scratch, events))


def run(args: Any, scratch: Path, events: int) -> dict[str, Any]:
    """Both parts on a private vhost; returns the JSON payload."""
    with private_vhost("memory") as broker_url:
        env = {
            "BROKER_URL": broker_url,
            "AUTH0_LOG_STREAM_TOKENS": BENCH_TOKEN,
            "DATABASE_URL": f"sqlite:///{scratch / 'ledger.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics"),
        }
        os.environ.pop("AUTH0_EVENTS_ROUTES", None)  # the default routes, which the worker lines' -Q cover
        os.environ.update(env)
        info = machine_info(broker_url)
        print_machine(info)
        from kernel.routing import parse_routes
        from kernel.settings import get_settings
        from kernel.storage.db import upgrade

        get_settings.cache_clear()
        settings = get_settings()
        routes = parse_routes(settings.routes)

        def accept(code: str) -> bool:
            return routes.queue_for(code) is not None

        print(
            f"memory: receiver peaks, then a soak of {events:,} events (ledger: {args.database})", flush=True
        )
        web, base = start_web(env, scratch, workers=2)
        try:
            records = sample_records(4_000 if args.quick else 16_000, args.seed, accept)
            # As many records as fill 90% of the body limit (AUTH0_EVENTS_MAX_BODY_BYTES).
            record_size = len(jsonl(records[:1000])) / 1000
            big = sample_records(int(settings.max_body_bytes * 0.9 / record_size), args.seed + 2, accept)
            peaks = receiver_peaks(base, web, records, big, args.quick)
            purge(broker_url, list(routes.queues))
            if args.database == "postgresql":
                with private_postgres() as database_url:
                    result = _soak_with_workers(args, env, scratch, web, base, database_url, events, accept)
            else:
                database_url = env["DATABASE_URL"]
                upgrade(database_url)
                result = _soak_with_workers(args, env, scratch, web, base, database_url, events, accept)
        finally:
            web.stop()
    return report(info, args, peaks, result, events)


def _soak_with_workers(
    args: Any,
    env: dict[str, str],
    scratch: Path,
    web: Service,
    base: str,
    database_url: str,
    events: int,
    accept: Any,
) -> dict[str, Any]:
    workers = start_workers({**env, "DATABASE_URL": database_url}, scratch)
    services = {"web": web, **{worker.name: worker for worker in workers}}
    sampler = Sampler(services, database_url, interval=0.5 if args.quick else 1.0)
    try:
        sampler.start()
        timeout = 120.0 if args.quick else 900.0
        figures = soak(base, sampler, [web, *workers], events, args.backlog, args.seed, accept, timeout)
        sampler.stop()
        figures["ledger_states"] = ledger_states(database_url)
    finally:
        try:
            sampler.halt()
        finally:
            stop_all(workers)
    from kernel.settings import get_settings

    time_limit = float(get_settings().task_time_limit)  # the workers' own: they read the same environment
    figures["warm_up_events"] = int(warm_up_end(sampler.samples, events, time_limit))
    figures["processes"] = growth(sampler.samples, sampler.labels, events, figures["warm_up_events"])
    figures["samples"] = _thin(sampler.samples, 400)
    figures["pids"] = {str(pid): label for pid, label in sampler.labels.items()}
    return figures


def _thin(samples: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    step = max(1, len(samples) // most)
    return samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])


def report(
    info: dict[str, Any], args: Any, peaks: dict[str, Any], soaked: dict[str, Any], events: int
) -> dict[str, Any]:
    """Print the peaks, the growth per process and the targets; return the JSON payload."""
    processes = soaked["processes"]
    receiver_peak = max(
        [value for part in peaks.values() for value in part["peak_rss_mib_per_process"]]
        + [entry["peak_mib"] for entry in processes.values() if entry["role"] == "web.child"]
    )
    worker_peak = max(
        (entry["peak_mib"] for entry in processes.values() if entry["role"].startswith("worker")), default=0.0
    )
    worst = max(
        (entry for entry in processes.values() if "mib_per_100k_events" in entry),
        key=lambda entry: entry["mib_per_100k_events"],
        default=None,
    )
    worst_growth = worst["mib_per_100k_events"] if worst else 0.0
    targets = {
        f"receiver RSS <= {RECEIVER_LIMIT_MIB:.0f} MiB per process": receiver_peak <= RECEIVER_LIMIT_MIB,
        f"no growth (< {GROWTH_LIMIT_MIB_PER_100K:g} MiB per 100,000 events, every process)": worst_growth
        < GROWTH_LIMIT_MIB_PER_100K,
    }
    print()
    print(
        f"soak: {soaked['events']:,} events in {soaked['seconds']:.0f} s ({soaked['events_per_s']:.0f}/s); "
        f"ledger {soaked['ledger_states']}"
    )
    header = f"{'process':<26}{'peak MiB':>10}{'start MiB':>11}{'end MiB':>9}{'MiB/100k events':>17}"
    print(header + f"{'last 25%':>10}")
    for entry in processes.values():
        print(
            f"{entry['role']:<26}{entry['peak_mib']:>10.1f}{entry.get('window_start_mib', 0):>11.1f}"
            f"{entry.get('window_end_mib', 0):>9.1f}{entry.get('mib_per_100k_events', 0):>17.2f}"
            f"{entry.get('last_quarter_mib_per_100k_events', 0):>10.2f}"
        )
    print(f"peak RSS: receiver {receiver_peak:.0f} MiB per process, worker {worker_peak:.0f} MiB per process")
    if args.quick:
        print("(--quick: too few events for the growth figures to mean much)")
    print_targets(targets)
    return {
        "benchmark": "memory",
        "machine": info,
        "settings": {
            "soak_events": events,
            "backlog": args.backlog,
            "database": args.database,
            "warm_up_fraction": WARM_UP_FRACTION,
            "web": web_command(),
        },
        "receiver_peaks": peaks,
        "soak": soaked,
        "peak_rss_mib": {
            "receiver_per_process": round(receiver_peak, 1),
            "worker_per_process": round(worker_peak, 1),
        },
        "worst_growth_mib_per_100k_events": worst_growth,
        "targets": targets,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


if __name__ == "__main__":
    sys.exit(main())
