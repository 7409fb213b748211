"""Prometheus metrics: exact counts of a known traffic mix from a gunicorn receiver and a real worker,
queue gauges against the broker, /metrics without a broker, and the shipped alert rules and dashboard."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import requests
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from kernel.broker_status import queue_state
from tests.helpers import (
    BEARER_AUTH,
    ROOT,
    as_jsonl,
    free_port,
    make_record,
    procfile_receiver,
    take_messages,
    wait_for,
    with_action,
)

MONITORING = ROOT / "monitoring"

LOG = "tasks.builtin.log_event.log_event"
SCRIPTED = "tests.plugin_handlers.scripted_handler"
SECOND = "tests.plugin_handlers.second_handler"
TRANSACTIONAL = "tests.plugin_handlers.transactional_handler"

Series = dict[tuple[str, ...], float]


def scrape(url: str) -> list[Metric]:
    """GET <url>/metrics and parse it."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return list(text_string_to_metric_families(response.text))


def series(families: list[Metric], sample: str, *labels: str) -> Series:
    """The values of every ``sample`` series, keyed by the values of ``labels``."""
    return {
        tuple(s.labels[label] for label in labels): s.value
        for family in families
        for s in family.samples
        if s.name == sample
    }


def settle(
    read: Callable[[], dict[str, Any]], expected: dict[str, Any], what: str, timeout: float = 60
) -> None:
    """Poll ``read`` until it returns ``expected``; on timeout, show the difference, part by part."""
    try:
        wait_for(lambda: read() == expected, timeout, 0.2, what)
    except AssertionError:
        actual = read()
        for part in expected:
            assert actual.get(part) == expected[part], f"{what}: {part}"
        assert actual == expected, what


# --- a receiver served as in production, and a worker with its metrics port ---------------------------


@dataclass
class Service:
    receiver: str
    worker: str
    worker_process: Any
    queues: tuple[str, str]  # the work queues of s and ss


@pytest.fixture
def service(tmp_path: Path, start_worker: Any) -> Iterator[Service]:
    """The Procfile's web line (gunicorn, 2 workers) and a real worker, both on queues of this test's own.

    The receiver's multiprocess directory is the test's own and holds a file of an earlier run, which
    must not count; the worker makes its own directory, as it does out of the box.
    """
    prefix = f"metrics-{uuid.uuid4().hex[:8]}"
    queues = (f"{prefix}.s", f"{prefix}.ss")
    routes = f"s={queues[0]},ss={queues[1]}"
    metrics_dir = tmp_path / "receiver-metrics"
    metrics_dir.mkdir()
    subprocess.run(
        [sys.executable, "-c", "from app.metrics import RECORDS; RECORDS.labels('s', 'accepted').inc(1000)"],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        check=True,
        timeout=60,
    )
    assert list(metrics_dir.glob("counter_*.db")), "the stale file of an earlier run was not written"

    worker_port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "AUTH0_EVENTS_ROUTES": routes}
    with procfile_receiver(tmp_path / "gunicorn.log", env, workers=2) as receiver:
        worker = start_worker(
            list(queues),
            env={"AUTH0_EVENTS_METRICS_PORT": str(worker_port), "AUTH0_EVENTS_ROUTES": routes},
            concurrency=2,
        )
        yield Service(receiver.url, f"http://127.0.0.1:{worker_port}", worker, queues)


def traffic_mix() -> list[Any]:
    """3 s, 2 ss, a permanent failure (s), a transient one (ss), a filtered w, an invalid record and a
    repeated log_id: 10 records, dated a minute ago."""
    date = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    plain_s = [make_record("s", date=date) for _ in range(3)]
    plain_ss = [make_record("ss", date=date) for _ in range(2)]
    return [
        *plain_s,
        *plain_ss,
        with_action(make_record("s", date=date), "permanent"),
        with_action(make_record("ss", date=date), "fail_once"),
        make_record("w", date=date),  # not routed: filtered
        {"data": {"type": "ss", "date": date}},  # no log_id: quarantined
        copy.deepcopy(plain_s[0]),  # the same log_id again within the batch: a duplicate
    ]


def receiver_counts(url: str) -> dict[str, Series]:
    families = scrape(url)
    return {
        "records": series(families, "auth0_events_records_total", "event_type", "outcome"),
        "batches": series(families, "auth0_events_batch_records_count"),
        "batch_records": series(families, "auth0_events_batch_records_sum"),
        "publishes": series(families, "auth0_events_publish_duration_seconds_count", "outcome"),
        "webhook_requests": {
            key: value
            for key, value in series(
                families, "auth0_events_http_requests_total", "method", "path", "status"
            ).items()
            if key[1] in ("/webhooks/auth0", "/healthz")
        },
    }


def worker_counts(url: str) -> dict[str, Series]:
    families = scrape(url)
    return {
        "tasks": series(families, "auth0_events_tasks_total", "event_type", "outcome"),
        "handlers": series(families, "auth0_events_handler_runs_total", "event_type", "handler", "outcome"),
        "durations": series(families, "auth0_events_handler_duration_seconds_count", "event_type", "handler"),
        "lag": series(families, "auth0_events_event_lag_seconds_count", "event_type"),
    }


def queue_gauges(url: str, names: list[str]) -> dict[str, tuple[float, float]]:
    families = scrape(url)
    messages = series(families, "auth0_events_queue_messages", "queue")
    consumers = series(families, "auth0_events_queue_consumers", "queue")
    return {name: (messages[(name,)], consumers[(name,)]) for name in names if (name,) in messages}


def broker_queues(broker: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    states = [queue_state(broker, name) for name in names]
    return {state.name: (float(state.messages or 0), float(state.consumers or 0)) for state in states}


@pytest.mark.worker
def test_metrics_report_a_known_traffic_mix_exactly(service: Service, broker: Any) -> None:
    """Both /metrics report the mix's counts exactly, a batch posted twice is skipped as duplicate, and the
    queue gauges match the broker."""
    started = time.time()
    batch = traffic_mix()

    def post() -> None:
        response = requests.post(
            f"{service.receiver}/webhooks/auth0", data=as_jsonl(batch), headers=BEARER_AUTH, timeout=30
        )
        assert response.status_code == 202, response.text
        assert response.json() == {
            "received": 10,
            "accepted": 7,
            "filtered": 1,
            "quarantined": 1,
            "duplicates": 1,
        }

    post()
    # Two gunicorn workers answer these; /metrics adds up both.
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(lambda _: requests.get(f"{service.receiver}/healthz", timeout=10).status_code, range(20))
        )
    assert statuses == [200] * 20

    records = {("s", "accepted"): 4, ("ss", "accepted"): 3, ("w", "filtered"): 1, ("ss", "quarantined"): 1}
    records[("s", "duplicate")] = 1
    assert receiver_counts(service.receiver) == {
        "records": records,
        "batches": {(): 1},
        "batch_records": {(): 10},
        "publishes": {("confirmed",): 1},
        "webhook_requests": {("POST", "/webhooks/auth0", "202"): 1, ("GET", "/healthz", "200"): 20},
    }
    # Handlers run in registration order: the built-in log, then scripted (which fails as told), second
    # and transactional. fail_once fails its first attempt in scripted, after log had run.
    first: dict[str, Any] = {
        "tasks": {
            ("s", "succeeded"): 3,
            ("s", "dead_lettered"): 1,
            ("ss", "succeeded"): 3,
            ("ss", "retried"): 1,
        },
        "handlers": {
            ("s", LOG, "succeeded"): 4,
            ("s", SCRIPTED, "succeeded"): 3,
            ("s", SCRIPTED, "failed"): 1,
            ("s", SECOND, "succeeded"): 3,
            ("s", TRANSACTIONAL, "succeeded"): 3,
            ("ss", LOG, "succeeded"): 3,
            ("ss", LOG, "skipped_duplicate"): 1,  # the retry of fail_once
            ("ss", SCRIPTED, "succeeded"): 3,
            ("ss", SCRIPTED, "failed"): 1,
            ("ss", SECOND, "succeeded"): 3,
            ("ss", TRANSACTIONAL, "succeeded"): 3,
        },
        "durations": {
            ("s", LOG): 4,
            ("s", SCRIPTED): 4,
            ("s", SECOND): 3,
            ("s", TRANSACTIONAL): 3,
            ("ss", LOG): 3,
            ("ss", SCRIPTED): 4,
            ("ss", SECOND): 3,
            ("ss", TRANSACTIONAL): 3,
        },
        "lag": {("s",): 3, ("ss",): 3},  # the dead-lettered event is never handled
    }
    settle(lambda: worker_counts(service.worker), first, "the worker's counts of the first batch")
    lag = scrape(service.worker)
    assert series(lag, "auth0_events_event_lag_seconds_sum", "event_type")[("s",)] >= 3 * 60

    # The same batch again: every handler already done is skipped; the permanent failure fails again.
    post()
    second = copy.deepcopy(first)
    second["tasks"].update({("s", "succeeded"): 6, ("s", "dead_lettered"): 2, ("ss", "succeeded"): 6})
    second["handlers"].update(
        {
            ("s", LOG, "skipped_duplicate"): 4,
            ("s", SCRIPTED, "failed"): 2,
            ("s", SCRIPTED, "skipped_duplicate"): 3,
            ("s", SECOND, "skipped_duplicate"): 3,
            ("s", TRANSACTIONAL, "skipped_duplicate"): 3,
            ("ss", LOG, "skipped_duplicate"): 4,
            ("ss", SCRIPTED, "skipped_duplicate"): 3,
            ("ss", SECOND, "skipped_duplicate"): 3,
            ("ss", TRANSACTIONAL, "skipped_duplicate"): 3,
        }
    )
    second["durations"][("s", SCRIPTED)] = 5
    settle(lambda: worker_counts(service.worker), second, "the worker's counts after the same batch again")
    counts = receiver_counts(service.receiver)
    assert counts["records"] == {key: 2 * value for key, value in records.items()}
    assert (counts["batches"], counts["batch_records"]) == ({(): 2}, {(): 20})
    assert counts["publishes"] == {("confirmed",): 2}

    # Queue gauges: as the broker says, and as the traffic left them.
    s_queue, ss_queue = service.queues
    names = [s_queue, ss_queue, f"{s_queue}.dlq", f"{ss_queue}.dlq", "auth0.quarantine"]
    expected = {s_queue: (0, 1), ss_queue: (0, 1), f"{s_queue}.dlq": (2, 0), f"{ss_queue}.dlq": (0, 0)}
    settle(
        lambda: {k: v for k, v in broker_queues(broker, names).items() if k in expected}, expected, "queues"
    )
    settle(lambda: queue_gauges(service.receiver, names), broker_queues(broker, names), "queue gauges")
    assert broker_queues(broker, names)["auth0.quarantine"][0] >= 2
    ages = series(scrape(service.receiver), "auth0_events_dlq_oldest_message_age_seconds", "queue")
    assert ages[(f"{ss_queue}.dlq",)] == 0
    assert 0 <= ages[(f"{s_queue}.dlq",)] <= time.time() - started + 2
    assert series(scrape(service.receiver), "auth0_events_broker_up") == {(): 1}

    # The worker node's files are in a private directory of its own, removed when it stops.
    match = re.search(
        r"serving worker metrics of \S+ at \S+ \(files in (\S+)\)", service.worker_process.log_text()
    )
    assert match, service.worker_process.log_text()[-3000:]
    node_dir = Path(match.group(1))
    assert node_dir.name.startswith("worker-")
    assert list(node_dir.glob("counter_*.db"))  # one per pool child that counted
    service.worker_process.stop()
    assert not node_dir.parent.exists()


def test_metrics_answer_with_broker_up_0_when_the_broker_is_unreachable(make_app: Any) -> None:
    """A broker outage leaves /metrics answering 200: the queue gauges are missing and broker_up is 0."""
    app = make_app(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    assert series(families, "auth0_events_broker_up") == {(): 0}
    assert series(families, "auth0_events_queue_messages", "queue") == {}


def test_dlq_age_counts_a_worker_refusal_and_survives_undecodable_headers(make_app: Any, broker: Any) -> None:
    """A message the worker refused has no x-death: its age comes from the refusal's time. A DLQ head with
    headers nested too deep for py-amqp (anyone with broker access can put one there) leaves /metrics
    answering, the broker up and that age unknown."""

    from kombu import Producer

    from kernel.storage.models import utcnow
    from kernel.wire import REFUSED_AT_HEADER

    queue = f"metrics-{uuid.uuid4().hex[:8]}.s"
    app = make_app(routes=f"s={queue}")
    assert app.test_client().get("/readyz").status_code == 200  # declares the queue and its DLQ
    producer = Producer(broker.default_channel, auto_declare=False)
    producer.publish(
        b"{}", routing_key=f"{queue}.dlq", headers={REFUSED_AT_HEADER: utcnow() - timedelta(seconds=90)}
    )
    ages = series(scrape_app(app), "auth0_events_dlq_oldest_message_age_seconds", "queue")
    assert 90 <= ages[(f"{queue}.dlq",)] < 150

    take_messages(broker, f"{queue}.dlq")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # py-amqp encodes headers recursively too
    try:
        producer.publish(b"{}", routing_key=f"{queue}.dlq", headers={"deep": nested_list(3000)})
    finally:
        sys.setrecursionlimit(limit)
    families = scrape_app(make_app(routes=f"s={queue}"))
    assert series(families, "auth0_events_broker_up") == {(): 1}
    assert (f"{queue}.dlq",) not in series(families, "auth0_events_dlq_oldest_message_age_seconds", "queue")
    assert series(families, "auth0_events_queue_messages", "queue")[(f"{queue}.dlq",)] == 1


def scrape_app(app: Any) -> list[Metric]:
    """The metric families of a receiver's GET /metrics, through its test client."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    return list(text_string_to_metric_families(response.text))


def nested_list(depth: int) -> Any:
    """A list nested ``depth`` levels deep."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_unknown_event_codes_share_one_label(client: Any) -> None:
    """Codes outside the catalogue are counted under event_type="other": a batch cannot add series."""
    from app.metrics import REGISTRY

    def filtered_other() -> float:
        labels = {"event_type": "other", "outcome": "filtered"}
        return REGISTRY.get_sample_value("auth0_events_records_total", labels) or 0.0

    before = filtered_other()
    records = [make_record("zz_new_code"), make_record("x" * 300)]
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers=BEARER_AUTH)
    assert response.json["filtered"] == 2
    assert filtered_other() == before + 2


# --- the shipped alert rules and dashboard ---------------------------------------------------------------

SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def exported_families() -> dict[str, set[str]]:
    """Each metric family the service exports, with its sample names, from the live registries."""
    from app.metrics import REGISTRY as RECEIVER
    from app.metrics import BrokerCollector
    from tasks.metrics import REGISTRY as WORKER

    broker = BrokerCollector(lambda: pytest.fail("describing must not connect"), ["auth0.s"])
    families = [*RECEIVER.collect(), *WORKER.collect(), *broker.describe()]
    return {
        family.name: {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
        for family in families
    }


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects; raises ValueError when it is not PromQL."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alert-rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard, with Grafana's variables replaced by values."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    substitutions = {"$__rate_interval": "5m", "$event_type": ".*"}
    for old, new in substitutions.items():
        exprs = [expr.replace(old, new) for expr in exprs]
    return exprs


def test_alert_rules_file_is_valid() -> None:
    """groups → rules, each an alert with a PromQL expr, a for duration, a severity and annotations."""
    document = yaml.safe_load((MONITORING / "alert-rules.yml").read_text())
    assert set(document) == {"groups"}
    assert [set(group) for group in document["groups"]] == [{"name", "rules"}] * len(document["groups"])
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
        promql_parser.parse(rule["expr"])
        assert promql_parser.parse_duration(rule["for"]) > timedelta(0)
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert set(rule["annotations"]) == {"summary", "description"}
        assert all(isinstance(text, str) and text for text in rule["annotations"].values())


def test_alert_rules_cover_the_failure_modes() -> None:
    """The rules alert on the DLQ, its oldest message, lag, receiver 5xx, missing consumers and the broker."""
    used = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}
    needed = {
        "auth0_events_queue_messages",
        "auth0_events_dlq_oldest_message_age_seconds",
        "auth0_events_event_lag_seconds_bucket",
        "auth0_events_http_requests_total",
        "auth0_events_queue_consumers",
        "auth0_events_broker_up",
    }
    assert needed <= set().union(*used.values())


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """Every metric in the rules and the dashboard is one the service exports, and the dashboard shows
    every family the service exports."""
    families = exported_families()
    exported = set().union(*families.values())
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= exported, rule["alert"]
    shown: set[str] = set()
    for expr in dashboard_queries():
        shown |= metric_names(expr)
    assert shown <= exported, shown - exported
    assert {name for name, samples in families.items() if samples & shown} == set(families)


def test_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    """Panels query the ${datasource} variable; the event_type variable reads an exported metric."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "auth0-events"
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    event_types = re.fullmatch(r"label_values\((\w+), event_type\)", variables["event_type"]["definition"])
    assert event_types is not None
    assert event_types.group(1) in set().union(*exported_families().values())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
