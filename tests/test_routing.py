"""Unit tests for kernel.routing: parsing AUTH0_EVENTS_ROUTES and choosing the queue for each event code."""

from __future__ import annotations

import pytest

from kernel.catalogue import CATEGORIES
from kernel.routing import RouteSpecError, RouteTable, default_queue_for, parse_routes
from kernel.settings import DEFAULT_ROUTES

ISSUE_EXAMPLE = "s,ss,slo,f,fp,fu=auth0.login_failed,auth.signup.fail=auth0.signup_failed"


def test_default_routes_give_the_eighteen_default_queues() -> None:
    """DEFAULT_ROUTES routes exactly the 18 documented codes, each to auth0.<code>."""
    table = parse_routes(DEFAULT_ROUTES)
    expected = {
        "auth0.s",
        "auth0.f",
        "auth0.fp",
        "auth0.fu",
        "auth0.ss",
        "auth0.fs",
        "auth0.slo",
        "auth0.flo",
        "auth0.scp",
        "auth0.fcp",
        "auth0.sdu",
        "auth0.pwd_leak",
        "auth0.signup_pwd_leak",
        "auth0.reset_pwd_leak",
        "auth0.limit_wc",
        "auth0.limit_mu",
        "auth0.limit_sul",
        "auth0.ferrt",
    }
    assert set(table.queues) == expected
    assert len(table.queues) == 18
    assert table.by_category == {}
    assert table.catch_all is None


def test_default_routes_send_each_code_to_its_own_queue() -> None:
    """Under DEFAULT_ROUTES every listed code goes to auth0.<code> and anything else is filtered."""
    table = parse_routes(DEFAULT_ROUTES)
    for code in DEFAULT_ROUTES.split(","):
        assert table.queue_for(code) == f"auth0.{code}"
    for code in ("fc", "sapi", "w", "no_such_code"):
        assert table.queue_for(code) is None


@pytest.mark.parametrize(
    ("selector", "queue"),
    [
        ("s", "auth0.s"),
        ("pwd_leak", "auth0.pwd_leak"),
        ("auth.login.fail", "auth0.auth.login.fail"),
        ("other", "auth0.other"),
        ("*", "auth0.other"),
    ],
)
def test_default_queue_names(selector: str, queue: str) -> None:
    """Without =queue a selector gets auth0.<selector>; '*' gets auth0.other."""
    assert default_queue_for(selector) == queue
    assert parse_routes(selector).queues == (queue,)


def test_queue_override() -> None:
    """code=queue sends that code to the named queue."""
    table = parse_routes("s=auth0.logins, fp = my-queue ")
    assert table.queue_for("s") == "auth0.logins"
    assert table.queue_for("fp") == "my-queue"
    assert table.queues == ("auth0.logins", "my-queue")


def test_empty_queue_after_equals_means_the_default() -> None:
    """code= with nothing after '=' falls back to the default queue name."""
    assert parse_routes("f=").queue_for("f") == "auth0.f"


def test_category_routes_each_of_its_codes() -> None:
    """A stream category selector routes every code filed under it to auth0.<category>."""
    table = parse_routes("auth.login.fail")
    assert table.queues == ("auth0.auth.login.fail",)
    for code in ("f", "fc", "fco", "fcoa", "fens", "fp", "fu"):
        assert table.queue_for(code) == "auth0.auth.login.fail", code
    for code in ("s", "ss", "fs", "pwd_leak", "unknown_code"):
        assert table.queue_for(code) is None, code


@pytest.mark.parametrize("category", sorted(set(CATEGORIES) - {"other"}))
def test_every_documented_category_is_a_valid_selector(category: str) -> None:
    """Each documented stream filter category parses and routes all of its codes."""
    table = parse_routes(category)
    assert table.by_category == {category: f"auth0.{category}"}
    for code in CATEGORIES[category]:
        assert table.queue_for(code) == f"auth0.{category}"


def test_exact_code_beats_category_beats_catch_all() -> None:
    """An exact code route wins over its category's route, which wins over '*'."""
    table = parse_routes("*=auth0.rest,auth.login.fail=auth0.fails,fp=auth0.wrong_password")
    assert table.queue_for("fp") == "auth0.wrong_password"
    assert table.queue_for("f") == "auth0.fails"
    assert table.queue_for("fu") == "auth0.fails"
    assert table.queue_for("s") == "auth0.rest"
    assert table.queue_for("never_heard_of_it") == "auth0.rest"


def test_order_of_entries_does_not_change_precedence() -> None:
    """Precedence is by kind of selector, not by position in the spec."""
    forward = parse_routes("fp=auth0.a,auth.login.fail=auth0.b,*=auth0.c")
    backward = parse_routes("*=auth0.c,auth.login.fail=auth0.b,fp=auth0.a")
    for code in ("fp", "f", "s", "zzz"):
        assert forward.queue_for(code) == backward.queue_for(code)


def test_other_category_catches_uncategorised_and_unknown_codes() -> None:
    """'other' routes codes the filter page lists under no category and codes missing from the catalogue."""
    table = parse_routes("other")
    assert table.queue_for("pwd_leak") == "auth0.other"
    assert table.queue_for("gd_auth_failed") == "auth0.other"
    assert table.queue_for("brand_new_code_2031") == "auth0.other"
    assert table.queue_for("f") is None
    assert table.queue_for("s") is None


def test_exact_code_beats_other() -> None:
    """An exact route for an uncategorised code wins over the 'other' category."""
    table = parse_routes("other=auth0.misc,pwd_leak")
    assert table.queue_for("pwd_leak") == "auth0.pwd_leak"
    assert table.queue_for("reset_pwd_leak") == "auth0.misc"


def test_unknown_codes_are_filtered_without_catch_all() -> None:
    """Without '*' or 'other', an unknown code is filtered out (None)."""
    table = parse_routes("s,auth.login.fail")
    assert table.queue_for("brand_new_code_2031") is None


def test_catch_all_takes_everything_left_over() -> None:
    """'*' alone accepts every code, known or not, into auth0.other."""
    table = parse_routes("*")
    for code in ("s", "f", "sapi", "pwd_leak", "brand_new_code_2031"):
        assert table.queue_for(code) == "auth0.other"
    assert table.catch_all == "auth0.other"


def test_an_unknown_code_is_a_valid_selector() -> None:
    """A code missing from the catalogue can still be routed by name (Auth0 adds codes without notice)."""
    table = parse_routes("brand_new_code_2031")
    assert table.queue_for("brand_new_code_2031") == "auth0.brand_new_code_2031"


def test_issue_example_each_entry_is_independent() -> None:
    """In the issue's spec only fu goes to auth0.login_failed; f, fp and the others keep their own queues."""
    table = parse_routes(ISSUE_EXAMPLE)
    assert table.queue_for("s") == "auth0.s"
    assert table.queue_for("ss") == "auth0.ss"
    assert table.queue_for("slo") == "auth0.slo"
    assert table.queue_for("f") == "auth0.f"
    assert table.queue_for("fp") == "auth0.fp"
    assert table.queue_for("fu") == "auth0.login_failed"
    assert table.queue_for("fs") == "auth0.signup_failed"
    assert table.queue_for("fc") is None
    assert table.queues == (
        "auth0.f",
        "auth0.fp",
        "auth0.login_failed",
        "auth0.s",
        "auth0.signup_failed",
        "auth0.slo",
        "auth0.ss",
    )


def test_queues_are_sorted_and_unique() -> None:
    """RouteTable.queues lists each queue once, sorted, including the catch-all's."""
    table = parse_routes("s=auth0.x,ss=auth0.x,auth.login.fail=auth0.a,*=auth0.x")
    assert table.queues == ("auth0.a", "auth0.x")


def test_same_selector_to_the_same_queue_twice_is_allowed() -> None:
    """Repeating a selector with the same queue is harmless."""
    table = parse_routes("f,f=auth0.f,*,*=auth0.other,auth.signup.fail,auth.signup.fail")
    assert table.queue_for("f") == "auth0.f"
    assert table.queue_for("fs") == "auth0.auth.signup.fail"


def test_whitespace_and_empty_entries_are_ignored() -> None:
    """Spaces around entries and empty entries between commas are ignored."""
    table = parse_routes(" s , ,ss ,, ")
    assert table == RouteTable(by_code={"s": "auth0.s", "ss": "auth0.ss"}, by_category={})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("", "AUTH0_EVENTS_ROUTES is empty", id="empty"),
        pytest.param("  ", "AUTH0_EVENTS_ROUTES is empty", id="blank"),
        pytest.param(" , ,", "AUTH0_EVENTS_ROUTES is empty", id="only-commas"),
        pytest.param("=auth0.x", "missing event code or category", id="no-selector"),
        pytest.param("auth.login.failed", "'auth.login.failed' is not a stream category", id="dotted-typo"),
        pytest.param("login.fail=auth0.x", "'login.fail' is not a stream category", id="unknown-dotted"),
        pytest.param("F", "'F' is not an event code", id="uppercase-code"),
        pytest.param("f-p", "'f-p' is not an event code", id="dash-in-code"),
        pytest.param("f=auth0 f", "'auth0 f' is not a valid queue name", id="space-in-queue"),
        pytest.param("f=a=b", "'a=b' is not a valid queue name", id="equals-in-queue"),
        pytest.param("f=.auth0", "'.auth0' is not a valid queue name", id="queue-starts-with-dot"),
        pytest.param("f=auth0.*", "'auth0.*' is not a valid queue name", id="wildcard-in-queue"),
        pytest.param("f=" + "q" * 202, "is not a valid queue name", id="queue-too-long"),
        pytest.param("f=auth0.f.dlq", "'auth0.f.dlq' is reserved", id="dlq-suffix"),
        pytest.param("f=mine.dlq", "'mine.dlq' is reserved", id="any-dlq-suffix"),
        pytest.param("f=auth0.quarantine", "'auth0.quarantine' is reserved", id="quarantine"),
        pytest.param("*=auth0.quarantine", "'auth0.quarantine' is reserved", id="catch-all-quarantine"),
        pytest.param("f=auth0.a,f=auth0.b", "'f' is already routed to 'auth0.a'", id="code-twice"),
        pytest.param("f,f=auth0.b", "'f' is already routed to 'auth0.f'", id="code-default-then-other"),
        pytest.param(
            "auth.login.fail,auth.login.fail=auth0.b",
            "'auth.login.fail' is already routed to 'auth0.auth.login.fail'",
            id="category-twice",
        ),
        pytest.param("*=auth0.a,*=auth0.b", "'\\*' is already routed to 'auth0.a'", id="catch-all-twice"),
    ],
)
def test_bad_specs_are_rejected_naming_the_problem(spec: str, message: str) -> None:
    """parse_routes raises RouteSpecError whose message names the offending entry or value."""
    with pytest.raises(RouteSpecError, match=message):
        parse_routes(spec)


def test_unknown_category_error_lists_the_known_ones() -> None:
    """The error for an unknown dotted selector lists the known categories, so the fix is obvious."""
    with pytest.raises(RouteSpecError) as caught:
        parse_routes("s,auth.login.failure")
    assert "route 'auth.login.failure'" in str(caught.value)
    assert "auth.login.fail," in str(caught.value)
    assert "other" in str(caught.value)


def test_route_spec_error_is_a_value_error() -> None:
    """RouteSpecError is a ValueError, so settings validation can report it like other bad values."""
    assert issubclass(RouteSpecError, ValueError)


def test_queue_names_reserved_by_rabbitmq_are_rejected() -> None:
    """A queue named amq.* (reserved by RabbitMQ) is refused when the routes are parsed."""
    with pytest.raises(RouteSpecError):
        parse_routes("f=amq.failures")


@pytest.mark.parametrize(
    ("spec", "selector", "dropped"),
    [
        ("s,f", "s", ()),
        ("s,f", "ferrt", ("ferrt",)),
        ("s,f", "no_such_code", ("no_such_code",)),
        ("s,f", "*", ()),
        ("s,f,fu", "auth.login.fail", ("fc", "fco", "fcoa", "fens", "fp")),
        ("s,auth.login.fail", "auth.login.fail", ()),
        ("s,auth.login.fail", "fp", ()),
        ("s,*", "auth.signup.fail", ()),
        ("s,*", "ferrt", ()),
        ("s", "management.fail", ("management.fail",)),
        ("s,management.fail", "management.fail", ()),
    ],
)
def test_dropped_by_names_the_codes_a_selector_would_miss(
    spec: str, selector: str, dropped: tuple[str, ...]
) -> None:
    """A code no route carries is dropped; a category's unrouted codes are; `*` never is (it sees what is
    routed); a category with no known code counts as itself unless it, or `*`, is routed."""
    assert parse_routes(spec).dropped_by(selector) == dropped


def test_filtered_codes_are_the_catalogue_codes_no_route_carries() -> None:
    """Under the defaults, sapi and fsa are among the filtered codes and none of the routed ones is; with
    `*` nothing is filtered."""
    filtered = parse_routes(DEFAULT_ROUTES).filtered_codes()
    assert {"sapi", "fsa", "seacft"} <= set(filtered)
    assert not set(DEFAULT_ROUTES.split(",")) & set(filtered)
    assert parse_routes(f"{DEFAULT_ROUTES},*").filtered_codes() == ()
