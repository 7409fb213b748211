"""`auth0-events topology migrate`: every waiting message and dead letter survives a change of queue type,
both ways, while a receiver keeps answering; a migration killed midway is finished by running it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kombu import Connection, Producer

from cli.topology.command import topology
from kernel.topology import DEAD_LETTER_EXCHANGE, declare_all
from tests.helpers import AUTH, as_jsonl, make_record, reload_settings, take_messages, task_kwargs, wait_for

CLI = Path(sys.executable).parent / "auth0-events"
LOGINS, FAILURES = "mig.logins", "mig.failures"
ROUTES = f"s={LOGINS},f={FAILURES}"
QUEUES = [LOGINS, f"{LOGINS}.dlq", FAILURES, f"{FAILURES}.dlq", "auth0.quarantine"]


@pytest.fixture
def vhost_url(new_vhost: str) -> str:
    """A vhost of this test's own (its queues change type; the run's vhost keeps classic ones)."""
    return new_vhost


def queue_types(url: str) -> dict[str, str]:
    """Each queue of the vhost and its type, as RabbitMQ reports them."""
    vhost = url.rsplit("/", 1)[1]
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)


def migrate(url: str, *args: str) -> Result:
    """Run ``auth0-events topology migrate ARGS`` in-process against ``url``."""
    env = {"BROKER_URL": url, "AUTH0_EVENTS_ROUTES": ROUTES}
    from kernel.settings import get_settings

    get_settings.cache_clear()  # the command reads BROKER_URL through the cached settings
    try:
        return CliRunner().invoke(topology, ["migrate", *args], env=env)
    finally:
        reload_settings()


def fill(url: str, dead: int) -> set[str]:
    """Declare the classic topology, then put ``dead`` dead letters in the DLQs; return their log_ids."""
    dead_ids = set()
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        declare_all(connection, [LOGINS, FAILURES], "classic")
        producer = Producer(connection.default_channel)
        for number in range(dead):
            log_id = f"dead-{number}-{uuid.uuid4().hex[:6]}"
            queue = LOGINS if number % 2 else FAILURES
            producer.publish(
                [[], {"log_id": log_id}, {}],
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=queue,
                headers={"x-death": [{"reason": "rejected", "queue": queue, "count": 1}]},
                delivery_mode=2,
            )
            dead_ids.add(log_id)
    return dead_ids


class Poster(threading.Thread):
    """POSTs one-event batches to a receiver until stopped, recording each status and accepted log_id."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.stop = client, threading.Event()
        self.statuses: list[int] = []
        self.accepted: set[str] = set()

    def run(self) -> None:
        """Post until told to stop."""
        while not self.stop.is_set():
            record = make_record("s" if len(self.statuses) % 2 else "f")
            response = self.client.post("/webhooks/auth0", data=as_jsonl([record]), headers=AUTH)
            self.statuses.append(response.status_code)
            if response.status_code == 202:
                self.accepted.add(record["log_id"])
            time.sleep(0.01)


def log_ids(url: str) -> tuple[list[str], list[str]]:
    """Take every message of the work queues and of the DLQs; return their log_ids (with repeats)."""
    with Connection(url) as connection:
        work = [task_kwargs(m)["log_id"] for q in (LOGINS, FAILURES) for m in take_messages(connection, q)]
        dead = [
            task_kwargs(m)["log_id"]
            for q in (f"{LOGINS}.dlq", f"{FAILURES}.dlq")
            for m in take_messages(connection, q)
        ]
    return work, dead


def test_migrate_moves_work_and_dead_letters_both_ways_while_the_receiver_answers(
    vhost_url: str, make_app: Any
) -> None:
    """classic -> quorum -> classic with batches arriving throughout: every batch 202, every accepted
    event and every dead letter in a queue of the new type, no holding queue left."""
    dead_ids = fill(vhost_url, 40)
    receiver = make_app(broker_url=vhost_url, routes=ROUTES, queue_type="classic").test_client()
    poster = Poster(receiver)
    poster.start()
    try:
        wait_for(lambda: len(poster.accepted) >= 20, what="batches before the migration")
        to_quorum = migrate(vhost_url, "--to", "quorum")
        assert to_quorum.exit_code == 0, to_quorum.output
        assert queue_types(vhost_url) == dict.fromkeys(QUEUES, "quorum")
        # A receiver still configured for classic queues (not restarted yet) answers too.
        late = make_app(broker_url=vhost_url, routes=ROUTES, queue_type="classic").test_client()
        assert (
            late.post("/webhooks/auth0", data=as_jsonl([make_record("s")]), headers=AUTH).status_code == 202
        )
        count = len(poster.accepted)
        wait_for(lambda: len(poster.accepted) >= count + 20, what="batches between the migrations")
        to_classic = migrate(vhost_url, "--to", "classic")
        assert to_classic.exit_code == 0, to_classic.output
    finally:
        poster.stop.set()
        poster.join(30)
    assert queue_types(vhost_url) == dict.fromkeys(QUEUES, "classic")
    assert set(poster.statuses) == {202}
    work, dead = log_ids(vhost_url)
    # Every accepted event waits (the late receiver's one too). One published in the instant two queues
    # share a binding (twice per work queue per migration: 8 flips here, a batch every 10 ms) waits twice,
    # which the ledger absorbs; nothing else is repeated.
    assert poster.accepted <= set(work)
    assert len(work) - len(set(work)) <= 16
    assert sorted(dead) == sorted(dead_ids)


def test_dry_run_reports_and_changes_nothing(vhost_url: str) -> None:
    """--dry-run names each queue to migrate with its depth and leaves every queue and message as it was."""
    dead_ids = fill(vhost_url, 6)
    result = migrate(vhost_url, "--to", "quorum", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{LOGINS}.dlq: to migrate (3 messages, 0 consumers)" in result.output
    assert f"{FAILURES}: to migrate (0 messages, 0 consumers)" in result.output
    assert queue_types(vhost_url) == dict.fromkeys(QUEUES, "classic")
    assert sorted(log_ids(vhost_url)[1]) == sorted(dead_ids)
    assert f"{LOGINS}: already classic" in migrate(vhost_url, "--to", "classic", "--dry-run").output


def test_migrate_refuses_queues_with_consumers(vhost_url: str) -> None:
    """A work queue a worker still consumes is refused before any queue is touched."""
    fill(vhost_url, 2)
    with Connection(vhost_url) as connection:
        connection.default_channel.basic_consume(LOGINS, callback=lambda message: None)
        result = migrate(vhost_url, "--to", "quorum")
    assert result.exit_code == 1
    assert f"queues with consumers: {LOGINS} (1); stop the workers consuming them first" in result.output
    assert queue_types(vhost_url) == dict.fromkeys(QUEUES, "classic")


def holding_depth(url: str, name: str) -> int:
    """Messages in ``name``'s holding queue; 0 while it does not exist."""
    with Connection(url) as connection, connection.channel() as channel:
        try:
            return int(channel.queue_declare(queue=f"{name}.migrating", passive=True).message_count)
        except Exception:  # noqa: BLE001 - NotFound until the migration declares it
            return 0


@pytest.mark.process
def test_a_migration_killed_midway_is_finished_by_running_it_again(vhost_url: str) -> None:
    """SIGKILL while dead letters are being moved: a second run finishes the migration, and every dead
    letter is in the quorum DLQ (one in flight at the kill at most twice), none in a holding queue."""
    dead_ids = fill(vhost_url, 600)
    env = {**os.environ, "BROKER_URL": vhost_url, "AUTH0_EVENTS_ROUTES": ROUTES}
    process = subprocess.Popen(
        [str(CLI), "topology", "migrate", "--to", "quorum"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: holding_depth(vhost_url, f"{LOGINS}.dlq") > 30, 120, 0.01, "the move to start")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert holding_depth(vhost_url, f"{LOGINS}.dlq") > 0
    resumed = migrate(vhost_url, "--to", "quorum")
    assert resumed.exit_code == 0, resumed.output
    assert queue_types(vhost_url) == dict.fromkeys(QUEUES, "quorum")
    _, dead = log_ids(vhost_url)
    assert set(dead) == dead_ids
    assert len(dead) - len(dead_ids) <= 1
