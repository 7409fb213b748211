"""``auth0-events routes``: the effective routes, the codes they filter out, and handlers they starve."""

from __future__ import annotations

from typing import Any

import click

from cli.common import echo_json, settings_or_exit
from kernel.catalogue import CATALOGUE, describe
from kernel.routing import RouteSpecError, RouteTable, parse_routes
from tasks.handlers import ALL_EVENTS, Registration, dropped_codes, registered, routing_gaps


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def routes(as_json: bool) -> None:
    """Show which events AUTH0_EVENTS_ROUTES accepts and the queue each goes to, the codes it filters
    out, and the handlers a worker loads, warning about each one that listens to codes the routes drop.

    The handlers are imported as a worker imports them: the enabled built-ins, installed plug-in packages
    and AUTH0_EVENTS_PLUGINS. One that cannot be imported is an error, as it would stop the worker.
    """
    settings = settings_or_exit()
    try:
        table = parse_routes(settings.routes)
    except RouteSpecError as exc:
        raise click.ClickException(f"AUTH0_EVENTS_ROUTES: {exc}") from exc
    handlers = _load_handlers()
    if as_json:
        echo_json(_as_dict(table, handlers))
        return
    _print_routes(table)
    _print_handlers(table, handlers)


def _load_handlers() -> list[Registration]:
    try:
        import tasks.plugins  # noqa: F401 - importing it registers what a worker registers
    except Exception as exc:  # noqa: BLE001 - whatever stops a worker's import is reported the same way
        raise click.ClickException(f"cannot load the handlers a worker loads: {exc}") from exc
    return registered()


def _rows(table: RouteTable) -> list[tuple[str, str, str]]:
    rows = [("code", code, queue) for code, queue in sorted(table.by_code.items())]
    rows += [("category", category, queue) for category, queue in sorted(table.by_category.items())]
    if table.catch_all:
        rows.append(("everything else", "*", table.catch_all))
    return rows


def _as_dict(table: RouteTable, handlers: list[Registration]) -> dict[str, Any]:
    return {
        "routes": [dict(zip(("kind", "selector", "queue"), row, strict=True)) for row in _rows(table)],
        "queues": list(table.queues),
        "filtered_codes": list(table.filtered_codes()),
        "handlers": [
            {"name": reg.name, "selectors": sorted(reg.selectors), "dropped": list(dropped_codes(reg, table))}
            for reg in handlers
        ],
    }


def _print_routes(table: RouteTable) -> None:
    for kind, selector, queue in _rows(table):
        name = describe(selector).name if kind == "code" else ""
        click.echo(f"{selector:<24} {queue:<32} {kind} {name}".rstrip())
    click.echo(f"\nwork queues ({len(table.queues)}): {','.join(table.queues)}")
    filtered = table.filtered_codes()
    if filtered:
        click.echo(
            f"filtered out (counted, not enqueued): {len(filtered)} of the {len(CATALOGUE)} catalogued codes "
            "and any code it does not list (`--json` lists them; add *=auth0.other to keep every event)"
        )
    else:
        click.echo("filtered out: nothing (* routes every code no other route names)")


def _print_handlers(table: RouteTable, handlers: list[Registration]) -> None:
    click.echo("\nhandlers a worker loads (built-ins enabled by the settings, plug-ins):")
    if not handlers:
        click.echo("  none")
    width = max((len(reg.name) for reg in handlers), default=0)
    for reg in handlers:
        if ALL_EVENTS in reg.selectors and table.catch_all is None:
            listens = "* (every event: it sees the routed codes only)"
        else:
            listens = ", ".join(sorted(reg.selectors))
        click.echo(f"  {reg.name:<{width}}  {listens}")
    for gap in routing_gaps(table):
        click.echo(f"warning: {gap.warning()}")
