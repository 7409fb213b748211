"""What every benchmark shares: the machine, a private vhost, the Procfile's processes, RSS and CPU sampling.

Nothing here imports ``tasks`` or ``app`` at module level: their settings are read from the environment at
import, and each benchmark sets that environment (private vhost, bench routes) first.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BROKER_HOST = "amqp://guest:guest@127.0.0.1:5672"
# Where the benchmarks create (and drop) a PostgreSQL database of their own.
POSTGRES_ADMIN_URL = os.environ.get(
    "AUTH0_EVENTS_BENCH_POSTGRES_URL",
    os.environ.get("AUTH0_EVENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
BENCH_TOKEN = "bench-stream-token-7c2e-private-vhost-0001"  # noqa: S105 - the private vhost's own
# The codes of the default AUTH0_EVENTS_ROUTES, each to a bench queue, and every other code to one more:
# every record of the realistic mix is accepted, spread over queues as in production.
DEFAULT_CODES = (
    "s",
    "f",
    "fp",
    "fu",
    "ss",
    "fs",
    "slo",
    "flo",
    "scp",
    "fcp",
    "sdu",
    "pwd_leak",
    "limit_wc",
    "limit_mu",
)
BENCH_ROUTES = ",".join([*(f"{code}=bench.{code}" for code in DEFAULT_CODES), "*=bench.other"])
VERSIONED = ("celery", "kombu", "amqp", "flask", "gunicorn", "sqlalchemy", "psycopg")


class BenchError(RuntimeError):
    """A benchmark could not run (a service missing, a process that did not start); the message says why."""


# -- the machine ------------------------------------------------------------------------------------------


def machine_info(broker_url: str) -> dict[str, Any]:
    """Cores, RAM, load and the versions that matter, RabbitMQ's read from the AMQP connection itself."""
    from kombu.connection import Connection

    try:
        with Connection(broker_url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            properties = dict(connection.connection.server_properties)
    except Exception as exc:  # noqa: BLE001 - any failure means the broker cannot be used
        raise BenchError(f"RabbitMQ at {redact(broker_url)} is not reachable: {exc}") from exc
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(_meminfo_kib("MemTotal") / 1024 / 1024, 1),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": f"{properties.get('product', '?')} {properties.get('version', '?')}",
        "versions": versions,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_machine(info: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """Print the machine block every benchmark starts with."""
    versions = info["versions"]
    load = " ".join(f"{value:.2f}" for value in info["load_average_at_start"])
    print("machine:", file=out)
    print(f"  cores: {info['cores']} ({info['cpu']}), RAM: {info['ram_gib']} GiB, load: {load}", file=out)
    print(f"  Python: {info['python']} on {info['os']}", file=out)
    print(f"  RabbitMQ: {info['rabbitmq']} (from the AMQP connection's server_properties)", file=out)
    print(
        f"  Celery: {versions['celery']} (kombu {versions['kombu']}, amqp {versions['amqp']}), "
        f"gunicorn {versions['gunicorn']}, Flask {versions['flask']}, SQLAlchemy {versions['sqlalchemy']}",
        file=out,
    )
    out.flush()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _meminfo_kib(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def redact(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


# -- arguments and results --------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--quick", action="store_true", help="a small run for CI (seconds, not minutes)")
    result.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (default bench/results)"
    )
    result.add_argument("--seed", type=int, default=7, help="seed of the sample records")
    result.add_argument(
        "--logs", type=Path, default=None, help="keep the services' logs and databases under this directory"
    )
    return result


@contextmanager
def scratch_dir(logs: Path | None, label: str) -> Iterator[Path]:
    """A directory for the run's logs and SQLite files: kept under ``logs`` if given, else temporary."""
    if logs is not None:
        path = logs / f"{label}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        path.mkdir(parents=True, exist_ok=True)
        print(f"logs: {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"auth0-events-bench-{label}-") as directory:
        yield Path(directory)


def run_benchmark(name: str, args: Any, run: Callable[[Path], dict[str, Any]]) -> int:
    """Run ``run`` in a scratch directory and write its payload as JSON, naming the command that made it.

    Returns the exit code: 0 when it ran (targets missed are reported, not an error), 1 after a BenchError.
    """
    try:
        with scratch_dir(args.logs, name) as scratch:
            payload = run(scratch)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = f"python -m bench.{name}" + (" --quick" if args.quick else "")
    payload = {"benchmark": name, "command": command, "arguments": " ".join(sys.argv[1:]), **payload}
    write_results(name, payload, args.results_dir, args.quick)
    return 0


def print_targets(targets: dict[str, bool]) -> None:
    """One line per target: met or MISSED."""
    for name, met in targets.items():
        print(f"  target {name}: {'met' if met else 'MISSED'}")


def write_results(name: str, payload: dict[str, Any], results_dir: Path, quick: bool) -> Path:
    """Write ``payload`` as ``<results_dir>/<name>[-quick].json`` and say where."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return path


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of ``values`` (in whatever unit they are), rounded to 0.01."""
    if not values:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        # Linear interpolation between closest ranks (numpy's default).
        position = fraction * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "count": len(ordered),
        "p50": round(rank(0.50), 2),
        "p95": round(rank(0.95), 2),
        "p99": round(rank(0.99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points; 0 for fewer than two distinct x."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


# -- records ----------------------------------------------------------------------------------------------


def sample_records(
    count: int, seed: int, accept: Callable[[str], bool] | None = None
) -> list[dict[str, Any]]:
    """``count`` realistic records (cli.send.samples' default mix), only of codes ``accept`` says yes to."""
    try:
        from cli.send.samples import SampleGenerator
    except ImportError:  # an older tree: the plain test records
        return _plain_records(count, accept)
    generator = SampleGenerator(seed=seed)
    records: list[dict[str, Any]] = []
    while len(records) < count:
        record = generator.record()
        if accept is None or accept(record["data"]["type"]):
            records.append(record)
    return records


def _plain_records(count: int, accept: Callable[[str], bool] | None) -> list[dict[str, Any]]:
    from tasks.testing import make_record

    codes = [code for code in DEFAULT_CODES if accept is None or accept(code)]
    return [make_record(codes[index % len(codes)]) for index in range(count)]


def jsonl(records: Sequence[Any]) -> bytes:
    """Encode records as Auth0's JSON Lines format sends them."""
    return "\n".join(json.dumps(record, separators=(",", ":")) for record in records).encode()


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive lists of ``size`` (the last may be shorter)."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


# -- RabbitMQ ---------------------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        raise BenchError(
            "rabbitmqctl not found: the benchmarks create a private vhost on the RabbitMQ at 127.0.0.1:5672; "
            "install rabbitmq-server, or set AUTH0_EVENTS_BENCH_BROKER_URL to a vhost they may use"
        )
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BenchError(f"`rabbitmqctl {' '.join(args)}` failed: {result.stderr or result.stdout}")


@contextmanager
def private_vhost(label: str) -> Iterator[str]:
    """A vhost of the run's own (deleted afterwards), or AUTH0_EVENTS_BENCH_BROKER_URL when set."""
    configured = os.environ.get("AUTH0_EVENTS_BENCH_BROKER_URL")
    if configured:
        yield configured
        return
    vhost = f"auth0-events-bench-{label}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{BROKER_HOST}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


def purge(broker_url: str, queue_names: Sequence[str]) -> int:
    """Empty the named queues (those that exist); return how many messages were dropped."""
    from amqp.exceptions import NotFound
    from kombu.connection import Connection

    dropped = 0
    with Connection(broker_url) as connection:
        for name in queue_names:
            channel = connection.channel()
            try:
                dropped += channel.queue_purge(name) or 0
            except NotFound:
                pass
            finally:
                if channel.is_open:
                    channel.close()
    return dropped


@contextmanager
def private_postgres() -> Iterator[str]:
    """A migrated PostgreSQL database of the run's own; dropped afterwards."""
    from kernel.storage.scratch_db import ScratchDatabaseError, scratch_postgres_database

    try:
        with scratch_postgres_database(POSTGRES_ADMIN_URL, "auth0_events_bench") as url:
            yield url
    except ScratchDatabaseError as exc:  # raised only while creating it, before the yield
        raise BenchError(
            f"PostgreSQL at {redact(POSTGRES_ADMIN_URL)} is not usable ({exc}); start it "
            "(scripts/ensure-postgres) or set AUTH0_EVENTS_BENCH_POSTGRES_URL"
        ) from exc


# -- processes --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile() -> dict[str, str]:
    """The Procfile's process lines, by name."""
    lines: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            lines[name.strip()] = command.strip()
    return lines


def web_command() -> str:
    """The Procfile's web line, bound to localhost instead of every interface."""
    command = procfile()["web"]
    return command.replace("--bind 0.0.0.0:", "--bind 127.0.0.1:")


def worker_commands(app_module: str = "tasks", metrics: bool = True) -> dict[str, str]:
    """The Procfile's worker lines, each with a free metrics port (or none) and ``-A app_module``."""
    commands = {}
    for name, command in procfile().items():
        if not name.startswith("worker"):
            continue
        port = str(free_port()) if metrics else ""
        command = re.sub(r"AUTH0_EVENTS_METRICS_PORT=\d+", f"AUTH0_EVENTS_METRICS_PORT={port}", command)
        commands[name] = command.replace("celery -A tasks ", f"celery -A {app_module} ", 1)
    if not commands:
        raise BenchError("the Procfile has no worker lines")
    return commands


def _venv_path() -> str:
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"


@dataclass
class Service:
    """One Procfile line run through the shell, as honcho runs it, in a process group of its own."""

    name: str
    command: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        """Start the line; its output goes to ``log_path``. Stopped at exit if nothing stopped it before."""
        _ensure_cleanup()
        _running.append(self)
        env = {**os.environ, **self.env, "PATH": _venv_path()}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        """Raise BenchError with the end of the log when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        """The last ``size`` characters of the log."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-size:]

    def processes(self) -> tuple[int | None, list[int]]:
        """The main process (the first below the shell) and its children, e.g. gunicorn's workers."""
        if self.process is None:
            return None, []
        main = self.process.pid
        if _comm(main) in ("sh", "dash", "bash"):
            children = _children(main)
            if not children:
                return None, []
            main = children[0]
        return main, _children(main)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group (a warm shutdown); SIGKILL after ``timeout`` seconds."""
        if self in _running:
            _running.remove(self)
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


_running: list[Service] = []
_cleanup_installed = False


def _ensure_cleanup() -> None:
    """Stop every service still running when the benchmark exits, also on SIGTERM (CI's time-out)."""
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_stop_leftovers)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_leftovers() -> None:
    stop_all(list(_running))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_web(
    env: dict[str, str], log_dir: Path, workers: int, extra: dict[str, str] | None = None
) -> tuple[Service, str]:
    """Start the Procfile's web line on a free localhost port; return it and its base URL once ready."""
    port = free_port()
    service = Service(
        "web",
        web_command(),
        {**env, "PORT": str(port), "WEB_CONCURRENCY": str(workers), **(extra or {})},
        log_dir / "web.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        service.check_alive()
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:  # noqa: S310 - our server
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise BenchError(f"the receiver did not become ready in 60 s:\n{service.log_tail()}")
        time.sleep(0.1)
    # Each gunicorn worker connects and declares on its first request; wait until all of them are up.
    deadline = time.monotonic() + 30
    while len(service.processes()[1]) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return service, base


def start_workers(
    env: dict[str, str], log_dir: Path, app_module: str = "tasks", timeout: float = 90.0, metrics: bool = True
) -> list[Service]:
    """Start every worker line of the Procfile; return them once each logged that it is ready."""
    services = [
        Service(name, command, env, log_dir / f"{name}-{app_module.replace('.', '_')}.log").start()
        for name, command in worker_commands(app_module, metrics).items()
    ]
    deadline = time.monotonic() + timeout
    try:
        for service in services:
            while " ready." not in service.log_tail(200_000):
                service.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{service.name} was not ready in {timeout:.0f} s:\n{service.log_tail()}"
                    )
                time.sleep(0.1)
    except BaseException:
        stop_all(services)
        raise
    return services


def stop_all(services: Sequence[Service]) -> None:
    """Stop services in parallel (each warm shutdown takes a moment)."""
    threads = [threading.Thread(target=service.stop) for service in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class RssSampler:
    """Samples the RSS of services' processes in a background thread: peaks per role, and a timeline."""

    services: dict[str, Service]
    interval: float = 0.5
    progress: Callable[[], float] | None = None
    peaks: dict[str, float] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> dict[str, Any]:
        """Take one sample now; record peaks per role (``<service>.main``, ``<service>.child``)."""
        point: dict[str, Any] = {"t": round(time.monotonic() - self._started, 2)}
        if self.progress is not None:
            point["progress"] = self.progress()
        for name, service in self.services.items():
            main, children = service.processes()
            for role, pids in (("main", [main] if main else []), ("child", children)):
                values = [value for value in (rss_mib(pid) for pid in pids) if value is not None]
                if not values:
                    continue
                key = f"{name}.{role}"
                point[key] = round(max(values), 1)
                point[key + "_total"] = round(sum(values), 1)
                self.peaks[key] = max(self.peaks.get(key, 0.0), max(values))
        self.timeline.append(point)
        return point

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """The local RabbitMQ node's Erlang VM (beam.smp), when it runs on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(int(entry.name)) == "beam.smp":
            try:
                if "rabbit" in (entry / "cmdline").read_text(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class CpuMeter:
    """CPU seconds used by groups of processes between ``__enter__`` and ``__exit__``, and the wall time."""

    groups: dict[str, Callable[[], list[int]]]
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _before: dict[str, dict[int, float]] = field(default_factory=dict)
    _started: float = 0.0

    _machine_before: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}
        self._machine_before = machine_busy_seconds()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self._started
        for name, pids in self.groups.items():
            before = self._before.get(name, {})
            self.used[name] = round(sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids()), 2)
        self.used["machine"] = round(machine_busy_seconds() - self._machine_before, 2)

    def shares(self) -> dict[str, float]:
        """CPU seconds per wall second for each group (1.0 = one core busy); ``other`` is the rest of the
        machine's busy time: the kernel's share of loopback traffic, and whatever else runs on the machine."""
        if not self.wall:
            return {}
        result = {name: round(used / self.wall, 2) for name, used in self.used.items()}
        if "machine" in self.used:
            known = sum(used for name, used in self.used.items() if name != "machine")
            result["other"] = round(max(0.0, self.used["machine"] - known) / self.wall, 2)
        return result


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    try:
        values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user time
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
