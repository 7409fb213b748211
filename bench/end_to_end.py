"""End-to-end benchmark: events posted to the receiver until every one is handled by the Procfile's workers.

    python -m bench.end_to_end                      # everything, about 9 minutes on a quiet machine
    python -m bench.end_to_end --events 0           # the backlog drains only (issue 14), about 5 minutes
    python -m bench.end_to_end --events 0 --curve ""  # the drains at the Procfile's concurrency only
    python -m bench.end_to_end --quick              # CI-sized, about a minute

One receiver (the Procfile's ``web:`` line) and, phase after phase, the Procfile's four worker lines as
honcho starts them (``celery -A tasks worker … -Q <their queues>``, the Procfile's WORKER_CONCURRENCY), on
a private vhost with the default routes. Each phase posts the same ``--events`` realistic records in
batches of 100 over ``--concurrency`` connections (after an untimed warm-up) and measures from the first
POST until the last event is handled:

- **bare Celery** (baseline): the same worker lines with ``-A bench.bare_celery``, the project's Celery
  configuration and a no-op task of the same name. Done when every work queue is empty (polled every 0.1 s).
- **ours, SQLite ledger** and **ours, PostgreSQL ledger**: the real workers with the built-in handlers
  (AUTH0_EVENTS_BUILTIN_HANDLERS default), each on a fresh migrated database. Done when the ledger's
  events table holds every event as processed; per-event latency is ``updated_at - received_at`` there.

Then the **backlog drains** (bench/drain.py): ``--drain-events`` successful logins queued on auth0.s while
no worker runs, drained by the Procfile's logins worker alone, ``--rounds`` times: bare Celery with the
prefork pool and 2 processes (issue 14's baseline), bare Celery on the Procfile's line (same pool and
WORKER_CONCURRENCY as ours), then ours on SQLite and on PostgreSQL, each also with the prefork pool and 2
processes (the figures before issue 14; ``--no-before`` skips them); ratios per round, then their median.
Then the **curve** on PostgreSQL: bare and ours at each WORKER_CONCURRENCY of ``--curve``.

Prints events/s per phase, ours/bare (target ≥ 0.7 with the ledger on, posted and drained), latency
p50/p95/p99 and peak RSS, and writes bench/results/end_to_end.json (end_to_end-quick.json with --quick).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import load
from bench.common import (
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
    private_postgres,
    private_vhost,
    run_benchmark,
    sample_records,
    start_web,
    start_workers,
    stop_all,
    web_command,
    worker_commands,
)
from bench.drain import (
    LOGINS,
    QUEUE,
    Drain,
    login_bodies,
    median,
    processed_counter,
    sqlite_ledger,
    truncate,
)

BATCH = 100
TARGET_RATIO = 0.7
# Issue 14's baseline: bare Celery as the Procfile ran it then, two prefork processes.
REFERENCE = "bare Celery prefork 2"
# Ours as the Procfile ran it before the threads pool: two prefork processes, each event committing alone.
BEFORE = "prefork 2 (before)"
PREFORK = {"AUTH0_EVENTS_WORKER_POOL": "prefork"}


# -- what the pipeline has done so far ---------------------------------------------------------------------


def ledger_processed(database_url: str, since: datetime | None = None) -> int:
    """Events in the ledger marked processed (received at or after ``since``)."""
    from sqlalchemy import func, select

    from kernel.storage.db import session_scope
    from kernel.storage.models import Event

    query = select(func.count()).select_from(Event).where(Event.state == "processed")
    if since is not None:
        query = query.where(Event.received_at >= since)
    with session_scope(database_url, read_only=True) as session:
        return int(session.scalar(query) or 0)


def ledger_states(database_url: str) -> dict[str, int]:
    """How many events the ledger holds in each state."""
    from sqlalchemy import func, select

    from kernel.storage.db import session_scope
    from kernel.storage.models import Event

    with session_scope(database_url, read_only=True) as session:
        rows = session.execute(select(Event.state, func.count()).group_by(Event.state)).all()
    return {str(state): int(count) for state, count in rows}


def ledger_timings(database_url: str, since: datetime) -> tuple[list[float], datetime | None]:
    """Per-event latency (received → handled, ms) of events received since ``since``, and the last handled."""
    from sqlalchemy import select

    from kernel.storage.db import session_scope
    from kernel.storage.models import Event

    query = select(Event.received_at, Event.updated_at).where(
        Event.state == "processed", Event.received_at >= since
    )
    with session_scope(database_url, read_only=True) as session:
        rows = session.execute(query).all()
    latencies = [(handled - received).total_seconds() * 1000 for received, handled in rows]
    return latencies, max((handled for _, handled in rows), default=None)


def queued(broker_url: str, queue_names: Sequence[str]) -> int:
    """Messages ready in the named queues (0 for one not declared yet)."""
    from amqp.exceptions import NotFound
    from kombu.connection import Connection

    total = 0
    with Connection(broker_url) as connection:
        for name in queue_names:
            channel = connection.channel()
            try:
                total += channel.queue_declare(name, passive=True).message_count
            except NotFound:
                pass
            finally:
                if channel.is_open:
                    channel.close()
    return total


def wait_until(
    check: Any, timeout: float, what: str, services: Sequence[Service], interval: float = 0.1
) -> None:
    """Poll ``check()`` until true; BenchError after ``timeout`` s or when a service died."""
    deadline = time.monotonic() + timeout
    while not check():
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def load_client(bodies: list[bytes]) -> Iterator[ProcessPoolExecutor]:
    """The load client's own process (so its threads take no CPU from this one)."""
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(1, mp_context=context, initializer=_load_init, initargs=(bodies,))
    try:
        yield executor
    finally:
        executor.shutdown()


_bodies: list[bytes] = []


def _load_init(bodies: list[bytes]) -> None:
    _bodies[:] = bodies


def post_all(
    executor: ProcessPoolExecutor, base: str, first: int, count: int, concurrency: int
) -> dict[str, Any]:
    """POST bodies[first:first+count] once each; raise BenchError if any was not accepted."""
    result = executor.submit(_post, base, first, count, concurrency).result()
    if result["failed"]:
        raise BenchError(
            f"{result['failed']} request(s) failed: {result['first_error']} ({result['statuses']})"
        )
    return result


def _post(base: str, first: int, count: int, concurrency: int) -> dict[str, Any]:
    return load.run_load(
        base, _bodies[first : first + count], BENCH_TOKEN, concurrency, 3600.0, max_requests=count
    )


# -- the phases -------------------------------------------------------------------------------------------


def run_phase(
    name: str,
    app_module: str,
    database_url: str,
    env: dict[str, str],
    scratch: Path,
    web: Service,
    base: str,
    executor: ProcessPoolExecutor,
    warm_requests: int,
    timed_requests: int,
    concurrency: int,
    queues: Sequence[str],
    timeout: float,
) -> dict[str, Any]:
    """Start the workers, warm them up, then time ``timed_requests`` batches: first POST to last handled."""
    ledger = app_module == "tasks"
    worker_env = {**env, "DATABASE_URL": database_url}
    started = time.monotonic()
    # The bare app serves no metrics (celeryconfig's imports connect the serving signal all the same).
    workers = start_workers(worker_env, scratch, app_module, metrics=ledger)
    startup = time.monotonic() - started
    try:
        services = [web, *workers]
        warm_events = warm_requests * BATCH
        post_all(executor, base, 0, warm_requests, concurrency)
        if ledger:
            wait_until(
                lambda: ledger_processed(database_url) >= warm_events, timeout, "the warm-up", services
            )
        else:
            wait_until(lambda: queued(env["BROKER_URL"], queues) == 0, timeout, "the warm-up", services)
        time.sleep(0.5)
        events = timed_requests * BATCH
        watched = {"web": web, **{service.name: service for service in workers}}
        groups = {
            "receiver": lambda: web.processes()[1],
            "workers": lambda: [pid for w in workers for pid in _tree(w)],
            "rabbitmq": broker_pids,
        }
        with RssSampler(watched, interval=0.5) as sampler, CpuMeter(groups) as meter:
            since = datetime.now().astimezone()
            start_wall = time.time()
            start = time.monotonic()
            posted = post_all(executor, base, warm_requests, timed_requests, concurrency)
            ingest_seconds = time.monotonic() - start
            if ledger:
                wait_until(
                    lambda: ledger_processed(database_url, since) >= events,
                    timeout,
                    f"{events} events",
                    services,
                )
                latencies, last = ledger_timings(database_url, since)
                seconds = (last.timestamp() if last else time.time()) - start_wall
            else:
                wait_until(
                    lambda: queued(env["BROKER_URL"], queues) == 0, timeout, f"{events} events", services
                )
                latencies, seconds = [], time.monotonic() - start
        meter.used["load client"] = posted["cpu_seconds"]
        result: dict[str, Any] = {
            "phase": name,
            "events": events,
            "accepted": posted["accepted"],
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1),
            "ingest_seconds": round(ingest_seconds, 3),
            "ingest_events_per_s": round(events / ingest_seconds, 1),
            "request_latency_ms": percentiles(posted["latencies_ms"]),
            "cores_used": meter.shares(),
            "rss_peak_mib": {key: round(value, 1) for key, value in sampler.peaks.items()},
            "worker_startup_seconds": round(startup, 1),
        }
        if ledger:
            result["event_latency_ms"] = percentiles(latencies)
            result["ledger_states"] = ledger_states(database_url)
        return result
    finally:
        stop_all(workers)


def _tree(service: Service) -> list[int]:
    main, children = service.processes()
    return ([main] if main else []) + children


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    options = parser(__doc__.split("\n\n")[0] if __doc__ else "end-to-end benchmark")
    options.add_argument(
        "--events",
        type=int,
        default=-1,
        help="timed events per posted phase (default 12000, quick 300; 0 skips the posted phases)",
    )
    options.add_argument("--concurrency", type=int, default=4, help="HTTP connections posting (default 4)")
    options.add_argument(
        "--worker-concurrency",
        type=int,
        default=0,
        help="WORKER_CONCURRENCY for every worker line, bare and ours alike (default: the Procfile's)",
    )
    options.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="ledger databases, in order (default sqlite,postgresql)",
    )
    options.add_argument(
        "--queue-type",
        choices=["classic", "quorum"],
        default="classic",
        help="quorum: one more phase, ours with the first ledger database on a vhost of quorum queues",
    )
    options.add_argument(
        "--drain-events",
        type=int,
        default=-1,
        help="successful logins in each backlog drain (default 4000, quick 200; 0 skips the drains)",
    )
    options.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="rounds of the drains bare/SQLite/PostgreSQL at the Procfile's concurrency (default 3, quick 1)",
    )
    options.add_argument(
        "--curve",
        default=None,
        help="WORKER_CONCURRENCY values of the PostgreSQL drain curve, bare and ours "
        '(default "2,4,8,16", quick none; "" skips it)',
    )
    options.add_argument(
        "--no-before",
        dest="before",
        action="store_false",
        help="skip ours with the prefork pool and 2 processes (the figures before issue 14) in each round "
        "(--quick skips it, and the bare prefork 2 baseline)",
    )
    args = options.parse_args(argv)
    if args.events < 0:
        args.events = 300 if args.quick else 12_000
    if args.drain_events < 0:
        args.drain_events = 200 if args.quick else 4_000
    if args.quick:
        args.before = False  # CI-sized: one drain per configuration
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.curve is None:
        args.curve = "" if args.quick else "2,4,8,16"
    events = args.events
    return run_benchmark("end_to_end", args, lambda scratch: run(args, scratch, events))


def run(args: Any, scratch: Path, events: int) -> dict[str, Any]:
    """Every phase on one private vhost; returns the JSON payload."""
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = set(databases) - {"sqlite", "postgresql"}
    if unknown:
        raise BenchError(f"unknown --databases {', '.join(sorted(unknown))}: use sqlite and/or postgresql")
    with private_vhost("e2e") as broker_url:
        env = {
            "BROKER_URL": broker_url,
            "AUTH0_LOG_STREAM_TOKENS": BENCH_TOKEN,
            "DATABASE_URL": f"sqlite:///{scratch / 'receiver.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics"),
        }
        if args.worker_concurrency:
            env["WORKER_CONCURRENCY"] = str(args.worker_concurrency)
        os.environ.pop("AUTH0_EVENTS_ROUTES", None)  # the default routes, which the worker lines' -Q cover
        os.environ.update(env)
        info = machine_info(broker_url)
        print_machine(info)
        from kernel.routing import parse_routes
        from kernel.settings import get_settings

        get_settings.cache_clear()
        routes = parse_routes(get_settings().routes)
        warm_requests = 1 if args.quick else 5
        timed_requests = -(-events // BATCH) if events else 0
        records = sample_records(
            (warm_requests + timed_requests) * BATCH,
            args.seed,
            lambda code: routes.queue_for(code) is not None,
        )
        bodies = [jsonl(batch) for batch in chunks(records, BATCH)]
        queues = list(routes.queues)
        workers = worker_commands()
        print(
            f"end to end: {timed_requests * BATCH} events per phase in batches of {BATCH} "
            f"over {args.concurrency} connections (after {warm_requests * BATCH} untimed); "
            f"{len(workers)} worker lines: " + ", ".join(workers),
            flush=True,
        )
        timeout = 60.0 if args.quick else 300.0
        phases: list[dict[str, Any]] = []
        drains: dict[str, Any] = {}
        web, base = start_web(env, scratch, workers=2)
        try:
            if events:
                phases = posted_phases(args, env, scratch, web, base, bodies, queues, databases, timeout)
            if args.drain_events:
                logins = login_bodies(args.drain_events, args.seed)
                drain = Drain(base, logins, broker_url, env, scratch, timeout)
                drains = drain_phases(args, drain, databases)
        finally:
            web.stop()
        if args.queue_type == "quorum":
            phases.append(quorum_phase(databases[0], env, scratch, bodies, args, common_counts(args, events)))
            _print_phase(phases[-1])
    return report(info, args, phases, drains)


def posted_phases(
    args: Any,
    env: dict[str, str],
    scratch: Path,
    web: Service,
    base: str,
    bodies: list[bytes],
    queues: list[str],
    databases: list[str],
    timeout: float,
) -> list[dict[str, Any]]:
    """Bare Celery, then ours on each database: the realistic mix posted while every worker line runs."""
    warm_requests = 1 if args.quick else 5
    timed_requests = len(bodies) - warm_requests
    phases: list[dict[str, Any]] = []
    with load_client(bodies) as executor:
        common = (
            env,
            scratch,
            web,
            base,
            executor,
            warm_requests,
            timed_requests,
            args.concurrency,
            queues,
        )
        bare_db = f"sqlite:///{scratch / 'bare.sqlite3'}"
        phases.append(run_phase("bare Celery (no-op task)", "bench.bare_celery", bare_db, *common, timeout))
        _print_phase(phases[-1])
        for database in databases:
            if database == "sqlite":
                from kernel.storage.db import upgrade

                url = f"sqlite:///{scratch / 'ledger.sqlite3'}"
                upgrade(url)
                phases.append(run_phase("ours, SQLite ledger", "tasks", url, *common, timeout))
            else:
                with private_postgres() as url:
                    phases.append(run_phase("ours, PostgreSQL ledger", "tasks", url, *common, timeout))
            _print_phase(phases[-1])
    return phases


def drain_phases(args: Any, drain: Drain, databases: list[str]) -> dict[str, Any]:
    """The drains: ``--rounds`` of bare/SQLite/PostgreSQL at the Procfile's concurrency, then the curve."""
    curve = [int(value) for value in args.curve.split(",") if value.strip()]
    print(
        f"backlog drains: {drain.events} successful logins on {QUEUE}, the Procfile's {LOGINS} line alone; "
        f"{args.rounds} round(s) at its WORKER_CONCURRENCY"
        + (f", then PostgreSQL at WORKER_CONCURRENCY {', '.join(map(str, curve))}" if curve else ""),
        flush=True,
    )
    rounds: list[dict[str, Any]] = []
    curve_points: list[dict[str, Any]] = []
    with private_postgres() if "postgresql" in databases else nullcontext("") as pg_url:
        for number in range(1, args.rounds + 1):
            references = []
            if not args.quick:  # CI-sized: the baseline on the Procfile's line only
                label = f"{REFERENCE}, round {number}"
                references.append(drain.run(label, "bench.bare_celery", 2, extra_env=PREFORK))
                _print_drain(references[-1])
            phases = [drain.run(f"bare Celery, round {number}", "bench.bare_celery", None)]
            _print_drain(phases[-1])
            before = []
            for database in databases:
                phases.append(_drain_ours(drain, database, pg_url, None, f", round {number}"))
                _print_drain(phases[-1])
                if args.before:
                    label = f" {BEFORE}, round {number}"
                    before.append(_drain_ours(drain, database, pg_url, 2, label, PREFORK))
                    _print_drain(before[-1])
            bare = phases[0]["events_per_s"]
            ours = [*phases[1:], *before]
            ratios = {p["phase"].split(",")[0]: round(p["events_per_s"] / bare, 3) for p in ours}
            for reference in references:
                ratios.update(
                    {
                        f"{p['phase'].split(',')[0]} vs {REFERENCE}": round(
                            p["events_per_s"] / reference["events_per_s"], 3
                        )
                        for p in ours
                    }
                )
            rounds.append({"phases": [*references, *phases, *before], "ratios": ratios})
            shown = ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
            print(f"  round {number} ratios to bare Celery: {shown}", flush=True)
        for concurrency in curve:
            bare = drain.run(f"bare Celery, concurrency {concurrency}", "bench.bare_celery", concurrency)
            _print_drain(bare)
            point = {"worker_concurrency": concurrency, "bare": bare["events_per_s"], "bare_phase": bare}
            if pg_url:
                mine = _drain_ours(drain, "postgresql", pg_url, concurrency, f", concurrency {concurrency}")
                _print_drain(mine)
                point.update(ours=mine["events_per_s"], ours_phase=mine)
            curve_points.append(point)
    names = rounds[0]["ratios"] if rounds else {}
    medians = {name: round(median([r["ratios"][name] for r in rounds]), 3) for name in names}
    return {"events": drain.events, "rounds": rounds, "median_ratios": medians, "curve": curve_points}


def _drain_ours(
    drain: Drain,
    database: str,
    pg_url: str,
    concurrency: int | None,
    label: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    if database == "sqlite":
        with sqlite_ledger(drain.scratch, re.sub(r"\W+", "_", label).strip("_")) as url:
            return drain.run(
                f"ours SQLite{label}", "tasks", concurrency, url, processed_counter(url), extra_env
            )
    truncate(pg_url)
    return drain.run(
        f"ours PostgreSQL{label}", "tasks", concurrency, pg_url, processed_counter(pg_url), extra_env
    )


def _print_drain(phase: dict[str, Any]) -> None:
    cores = ", ".join(f"{key} {value:.2f}" for key, value in phase["cores_used"].items())
    print(
        f"  {phase['phase']:<36}{phase['events_per_s']:>8,.0f} events/s ({phase['seconds']:.2f} s); "
        f"cores used: {cores}",
        flush=True,
    )


def common_counts(args: Any, events: int) -> tuple[int, int]:
    """(warm-up requests, timed requests) of every phase."""
    return (1 if args.quick else 5), -(-events // BATCH)


def quorum_phase(
    database: str,
    env: dict[str, str],
    scratch: Path,
    bodies: list[bytes],
    args: Any,
    counts: tuple[int, int],
) -> dict[str, Any]:
    """Ours with ``database`` as ledger, receiver and workers on a vhost of their own with quorum queues."""
    from kernel.routing import parse_routes
    from kernel.settings import get_settings

    queues = list(parse_routes(get_settings().routes).queues)
    folder = scratch / "quorum"
    folder.mkdir()
    timeout = 60.0 if args.quick else 300.0
    with private_vhost("e2e-quorum") as broker_url:
        quorum_env = {**env, "BROKER_URL": broker_url, "AUTH0_EVENTS_QUEUE_TYPE": "quorum"}
        web, base = start_web(quorum_env, folder, workers=2)
        try:
            with load_client(bodies) as executor, _ledger(database, folder) as url:
                common = (quorum_env, folder, web, base, executor, *counts, args.concurrency, queues)
                label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[database]
                return run_phase(f"ours, {label} ledger, quorum queues", "tasks", url, *common, timeout)
        finally:
            web.stop()


@contextmanager
def _ledger(database: str, folder: Path) -> Iterator[str]:
    if database == "postgresql":
        with private_postgres() as url:
            yield url
        return
    from kernel.storage.db import upgrade

    url = f"sqlite:///{folder / 'ledger.sqlite3'}"
    upgrade(url)
    yield url


def _print_phase(phase: dict[str, Any]) -> None:
    cores = ", ".join(f"{key} {value:.2f}" for key, value in phase["cores_used"].items())
    latency = phase.get("event_latency_ms")
    text = (
        f"p50 {latency['p50']:.0f} / p95 {latency['p95']:.0f} / p99 {latency['p99']:.0f} ms"
        if latency
        else "n/a"
    )
    print(
        f"  {phase['phase']:<26}{phase['events_per_s']:>8,.0f} events/s "
        f"(ingest alone {phase['ingest_events_per_s']:,.0f}/s);"
        f" event latency {text}; cores used: {cores}",
        flush=True,
    )


def report(
    info: dict[str, Any], args: Any, phases: list[dict[str, Any]], drains: dict[str, Any]
) -> dict[str, Any]:
    """Print the ratios and targets; return the JSON payload."""
    ratios: dict[str, float] = {}
    if phases:
        bare = phases[0]["events_per_s"]
        ratios = {phase["phase"]: round(phase["events_per_s"] / bare, 3) for phase in phases[1:]}
    drain_ratios = {f"drain, {name}": ratio for name, ratio in drains.get("median_ratios", {}).items()}
    targets = {
        f"{name}: >= {TARGET_RATIO} x bare Celery": ratio >= TARGET_RATIO
        for name, ratio in {**ratios, **drain_ratios}.items()
    }
    worker_rss = max(
        (value for p in phases for key, value in p["rss_peak_mib"].items() if key.startswith("worker")),
        default=0,
    )
    web_rss = max((p["rss_peak_mib"].get("web.child", 0.0) for p in phases), default=0.0)
    quorum = [phase for phase in phases if phase["phase"].endswith("quorum queues")]
    if quorum:
        classic = next(p for p in phases if quorum[0]["phase"].startswith(p["phase"] + ","))
        ratios["quorum/classic"] = round(quorum[0]["events_per_s"] / classic["events_per_s"], 3)
    print()
    for name, ratio in ratios.items():
        print(
            f"ratio {name} / bare Celery = {ratio:.2f}"
            if name != "quorum/classic"
            else f"{name} = {ratio:.2f}"
        )
    for name, ratio in drain_ratios.items():
        print(f"ratio {name} / bare Celery = {ratio:.2f} (median of {len(drains['rounds'])} round(s))")
    if drains.get("curve"):
        print("curve (backlog drain, events/s): WORKER_CONCURRENCY  bare  ours-PostgreSQL  ratio")
        for point in drains["curve"]:
            ours = float(point.get("ours", 0.0))
            shown = f"{ours / point['bare']:.2f}" if ours else "-"
            print(f"  {point['worker_concurrency']:>5}  {point['bare']:>8,.0f}  {ours:>8,.0f}  {shown}")
    print_targets(targets)
    if phases:
        print(f"peak RSS: receiver {web_rss:.0f} MiB per process, worker {worker_rss:.0f} MiB per process")
    return {
        "benchmark": "end_to_end",
        "machine": info,
        "settings": {
            "events_per_phase": args.events,
            "drain_events": args.drain_events,
            "drain_rounds": args.rounds,
            "curve": args.curve,
            "batch": BATCH,
            "connections": args.concurrency,
            "web": web_command(),
            "workers": worker_commands(),
            "worker_concurrency": args.worker_concurrency or "the Procfile's default",
        },
        "phases": phases,
        "ratios_to_bare_celery": ratios,
        "drains": drains,
        "targets": targets,
        "peak_rss_mib": {"receiver_per_process": web_rss, "worker_per_process": worker_rss},
    }


if __name__ == "__main__":
    sys.exit(main())
