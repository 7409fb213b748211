"""``auth0-events topology``: declare and inspect the broker's exchanges and queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from amqp.exceptions import AMQPError
from kombu.connection import Connection
from kombu.exceptions import KombuError

from cli.common import EXIT_FAILURE, Unavailable, connect_broker, echo_json, safe_broker_url, settings_or_exit
from cli.topology.migration import MigrationError, QueueMigration, inspect, migrate, target_queues
from kernel.broker_status import DeclareReport, QueueState, TopologyStatus, declare_topology, topology_status
from kernel.routing import RouteSpecError, parse_routes
from kernel.settings import QueueType, Settings

T = TypeVar("T")


@click.group()
def topology() -> None:
    """Declare, inspect and migrate exchanges, queues and DLQs."""


@topology.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def declare(as_json: bool) -> None:
    """Declare every exchange, queue, binding and DLQ that AUTH0_EVENTS_ROUTES needs; safe to repeat.

    A queue that already exists with other arguments is reported with RabbitMQ's reason and the rest
    are still declared; the command then exits 1. Exit 3: the broker cannot be reached.
    """
    report = _with_broker(
        lambda connection, settings, names: declare_topology(connection, names, settings.queue_type)
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)
    if report.refused:
        names = ", ".join(item.name for item in report.refused)
        raise click.ClickException(
            f"the broker refused {len(report.refused)} declaration(s): {names}. A queue's arguments cannot "
            "change in place: move any messages out of it, delete it (`rabbitmqctl delete_queue <name>`), "
            "then run `auth0-events topology declare` again"
        )


@topology.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(as_json: bool) -> None:
    """Show each work queue's depth and consumers, its DLQ's depth, and the quarantine queue.

    A configured queue that does not exist on the broker is shown as missing and the command exits 1
    (`topology declare` creates it). Exit 3: the broker cannot be reached.
    """
    state = _with_broker(lambda connection, _settings, names: topology_status(connection, names))
    if as_json:
        echo_json(state.to_dict())
    else:
        _print_status(state)
    if state.missing:
        click.echo(
            f"{len(state.missing)} configured queue(s) missing on the broker; "
            "`auth0-events topology declare` creates them",
            err=True,
        )
        raise SystemExit(EXIT_FAILURE)


@topology.command("migrate")
@click.option(
    "--to",
    "queue_type",
    type=click.Choice(["quorum", "classic"]),
    required=True,
    help="The queue type to move every queue to.",
)
@click.option(
    "--dry-run", is_flag=True, help="Show each queue's state and what would be done; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def migrate_command(queue_type: QueueType, dry_run: bool, as_json: bool) -> None:
    """Move every work queue, DLQ and the quarantine queue to another type, keeping every message.

    Each queue is swapped through a holding queue <queue>.migrating that takes its bindings meanwhile,
    so receivers keep publishing. Stop the workers first (a queue with consumers is refused); then set
    AUTH0_EVENTS_QUEUE_TYPE to the new type and start them. Safe to run again: it finishes an
    interrupted migration. Exit 1: a queue could not be migrated; 3: the broker cannot be reached.
    """

    def run(connection: Connection, _settings: Settings, names: tuple[str, ...]) -> list[QueueMigration]:
        queues = target_queues(names, queue_type)
        if dry_run:
            return inspect(connection, queues)
        return migrate(connection, queues, lambda line: click.echo(line, err=True))

    try:
        result = _with_broker(run)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json({"to": queue_type, "dry_run": dry_run, "queues": [item.to_dict() for item in result]})
        return
    for item in result:
        click.echo(_migration_line(item, queue_type, dry_run))


def _migration_line(item: QueueMigration, queue_type: str, dry_run: bool) -> str:
    holding = "" if item.holding_messages is None else f", {item.holding_messages} in {item.name}.migrating"
    counts = f"{item.messages} messages, {item.consumers} consumers{holding}"
    if not item.needs_work:
        return f"{item.name}: already {queue_type} ({counts})"
    if dry_run:
        found = {"other": "to migrate", "missing": "missing, to declare", "target": "to finish"}[item.state]
        return f"{item.name}: {found} ({counts})"
    return f"{item.name}: now {queue_type}, {item.moved} messages moved"


def _with_broker(action: Callable[[Connection, Settings, tuple[str, ...]], T]) -> T:
    settings = settings_or_exit()
    names = _work_queue_names(settings)
    connection = connect_broker(settings)
    try:
        return action(connection, settings, names)
    except (OSError, AMQPError, KombuError) as exc:
        raise Unavailable(f"lost the broker at {safe_broker_url(settings.broker_url)}: {exc}") from exc
    finally:
        connection.release()


def _work_queue_names(settings: Settings) -> tuple[str, ...]:
    try:
        return parse_routes(settings.routes).queues
    except RouteSpecError as exc:
        raise click.ClickException(f"AUTH0_EVENTS_ROUTES: {exc}") from exc


def _print_report(report: DeclareReport) -> None:
    for item in report.declarations:
        what = f"exchange {item.name} ({item.exchange_type})" if item.kind == "exchange" else item.name
        if item.kind == "queue":
            what = f"{item.role:<10} {item.name}  ->  {item.binding}"
        if item.ok:
            click.echo(f"declared  {what}")
        else:
            click.echo(f"REFUSED   {what}: {item.error}")


def _print_status(state: TopologyStatus) -> None:
    width = max(len(name) for name in [state.quarantine.name, *(w.queue.name for w in state.work_queues)])
    click.echo(f"{'queue':<{width}}  {'messages':>8}  {'consumers':>9}  {'dlq messages':>12}")
    for item in state.work_queues:
        click.echo(f"{item.queue.name:<{width}}  {_cells(item.queue)}  {_depth(item.dlq):>12}")
    click.echo(f"{state.quarantine.name:<{width}}  {_cells(state.quarantine)}")


def _cells(queue: QueueState) -> str:
    consumers = "" if queue.consumers is None else str(queue.consumers)
    return f"{_depth(queue):>8}  {consumers:>9}"


def _depth(queue: QueueState) -> str:
    return "missing" if queue.messages is None else str(queue.messages)
