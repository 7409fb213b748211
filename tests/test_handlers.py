"""Unit tests for tasks.handlers: @handles subscriptions, handlers_for, and loading handler modules."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kernel.events import Auth0Event
from kernel.routing import parse_routes
from tasks.handlers import (
    ALL_EVENTS,
    Handler,
    PermanentError,
    Registration,
    RetryableError,
    handlers_for,
    handles,
    import_handler_modules,
    registered,
    routing_gaps,
    unregister,
)

Register = Callable[..., str]


@pytest.fixture
def register() -> Iterator[Register]:
    """Register throwaway handlers by name; every one is unregistered afterwards."""
    before = {reg.name for reg in registered()}
    added: list[str] = []

    def register_handler(name: str, *selectors: str) -> str:
        def handler(event: Auth0Event) -> None:
            return None

        handler.__qualname__ = f"test_handlers_{name}"
        handles(*selectors)(handler)
        full_name = f"{handler.__module__}.{handler.__qualname__}"
        added.append(full_name)
        return full_name

    yield register_handler
    for name in added:
        unregister(name)
    assert {reg.name for reg in registered()} == before


def _names(event_type: str) -> list[str]:
    return [reg.name for reg in handlers_for(event_type)]


def test_handles_returns_the_function_unchanged(register: Register) -> None:
    """@handles registers the function and gives it back as it was, so it stays callable."""

    def original(event: Auth0Event) -> str:
        return "ran"

    original.__qualname__ = "test_handlers_unchanged"
    try:
        assert handles("s")(original) is original
        reg = next(r for r in registered() if r.func is original)
        assert reg.name == f"{__name__}.test_handlers_unchanged"
        assert reg.selectors == frozenset({"s"})
    finally:
        unregister(f"{__name__}.test_handlers_unchanged")
    assert all(r.func is not original for r in registered())


def test_code_selectors(register: Register) -> None:
    """A handler subscribed to codes runs for those codes only."""
    name = register("codes", "ss", "s")
    assert name in _names("ss")
    assert name in _names("s")
    assert name not in _names("f")
    assert name not in _names("sapi")


def test_category_selector_matches_its_codes(register: Register) -> None:
    """A handler subscribed to auth.login.fail runs for f, fp, fu, … and not for other codes."""
    name = register("login_fail", "auth.login.fail")
    for code in ("f", "fp", "fu", "fc", "fco", "fcoa", "fens"):
        assert name in _names(code), code
    for code in ("s", "fs", "pwd_leak", "brand_new_code_2031"):
        assert name not in _names(code), code


def test_catch_all_matches_every_code_including_unknown(register: Register) -> None:
    """A '*' handler runs for known codes, uncategorised codes and codes missing from the catalogue."""
    name = register("everything", ALL_EVENTS)
    for code in ("s", "f", "sapi", "pwd_leak", "brand_new_code_2031", ""):
        assert name in _names(code), code


def test_other_category_matches_uncategorised_and_unknown_codes(register: Register) -> None:
    """A handler subscribed to 'other' runs for uncategorised and unknown codes, not for categorised ones."""
    name = register("other", "other")
    assert name in _names("pwd_leak")
    assert name in _names("brand_new_code_2031")
    assert name not in _names("f")
    assert name not in _names("ss")


def test_mixed_selectors(register: Register) -> None:
    """Codes and categories can be combined in one subscription."""
    name = register("mixed", "pwd_leak", "auth.signup.fail")
    assert name in _names("pwd_leak")
    assert name in _names("fs")
    assert name not in _names("ss")


@pytest.mark.parametrize(
    ("selectors", "event_type", "wanted"),
    [
        (("s",), "s", True),
        (("s",), "ss", False),
        (("auth.login.fail",), "fp", True),
        (("auth.login.fail",), "auth.login.fail", True),
        (("other",), "limit_sul_unknown", True),
        ((ALL_EVENTS,), "anything", True),
        (("user.success",), "scp", True),
        (("user.success",), "fcp", False),
    ],
)
def test_registration_wants(selectors: tuple[str, ...], event_type: str, wanted: bool) -> None:
    """Registration.wants matches the code itself, its category ('other' if none) or '*'."""
    reg = Registration(name="x", func=lambda event: None, selectors=frozenset(selectors))
    assert reg.wants(event_type) is wanted


def test_handlers_for_keeps_registration_order(register: Register) -> None:
    """handlers_for lists matching handlers in the order they registered, whatever their selector."""
    first = register("first", "fp")
    second = register("second", ALL_EVENTS)
    third = register("third", "auth.login.fail")
    unrelated = register("unrelated", "ss")
    names = _names("fp")
    ours = [name for name in names if name in {first, second, third, unrelated}]
    assert ours == [first, second, third]


def test_registered_lists_every_registration_in_order(register: Register) -> None:
    """registered() includes our handlers, in registration order."""
    first = register("reg_a", "s")
    second = register("reg_b", "f")
    names = [reg.name for reg in registered()]
    assert names.index(first) < names.index(second)


def test_unregister_removes_only_that_handler(register: Register) -> None:
    """unregister(name) removes the named handler and no other."""
    gone = register("gone", "s")
    kept = register("kept", "s")
    unregister(gone)
    assert gone not in _names("s")
    assert kept in _names("s")


def test_unregister_unknown_name_is_harmless() -> None:
    """unregister of a name never registered does nothing."""
    before = [reg.name for reg in registered()]
    unregister("tests.test_handlers.never_registered")
    assert [reg.name for reg in registered()] == before


def test_registering_the_same_name_again_replaces_it(register: Register) -> None:
    """Re-registering a handler with the same dotted name replaces its selectors, not duplicates it."""
    name = register("same", "s")
    register("same", "f")
    assert name not in _names("s")
    assert name in _names("f")
    assert [reg.name for reg in registered()].count(name) == 1


@pytest.mark.parametrize("selectors", [(), ("",), ("s", "")], ids=["none", "empty", "one-empty"])
def test_handles_without_a_selector_raises(selectors: tuple[str, ...]) -> None:
    """@handles() with no (or an empty) selector raises ValueError before registering anything."""
    before = [reg.name for reg in registered()]
    with pytest.raises(ValueError, match="at least one event code"):
        handles(*selectors)
    assert [reg.name for reg in registered()] == before


def test_handles_rejects_non_string_selectors() -> None:
    """A non-string selector (a function, from @handles written without parentheses) is refused."""

    def handler(event: Auth0Event) -> None:
        return None

    with pytest.raises(ValueError, match="at least one event code"):
        handles(handler)  # type: ignore[arg-type]


@pytest.fixture
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write importable handler modules under tmp_path; unregister and forget them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def write(source: str) -> str:
        module = f"auth0_events_test_plugin_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
        created.append(module)
        return module

    yield write
    for module in created:
        for reg in registered():
            if reg.name.startswith(f"{module}."):
                unregister(reg.name)
        sys.modules.pop(module, None)


PLUGIN_SOURCE = """
from tasks.handlers import handles

@handles("s", "auth.login.fail")
def on_login(event):
    return None
"""


def test_import_handler_modules_registers_their_handlers(handler_module: Callable[[str], str]) -> None:
    """Importing a handler module registers its @handles functions."""
    module = handler_module(PLUGIN_SOURCE)
    import_handler_modules([module])
    assert f"{module}.on_login" in _names("s")
    assert f"{module}.on_login" in _names("fp")
    assert f"{module}.on_login" not in _names("ss")


def test_import_handler_modules_with_nothing_to_import() -> None:
    """An empty module list is fine and registers nothing."""
    before = [reg.name for reg in registered()]
    import_handler_modules([])
    assert [reg.name for reg in registered()] == before


@pytest.mark.parametrize(
    "missing",
    ["no_such_package_for_auth0_events", "tasks.no_such_handlers", "tasks.handlers.not_a_module"],
)
def test_import_handler_modules_names_the_missing_module(
    handler_module: Callable[[str], str], missing: str
) -> None:
    """A module that cannot be imported raises ImportError naming it."""
    module = handler_module(PLUGIN_SOURCE)
    with pytest.raises(ImportError, match=f"cannot import handler module '{re.escape(missing)}'"):
        import_handler_modules([module, missing])


def test_import_error_inside_a_module_names_that_module(handler_module: Callable[[str], str]) -> None:
    """A module whose own imports fail raises ImportError naming the module and the missing dependency."""
    module = handler_module("import dependency_that_is_not_installed_xyz\n")
    with pytest.raises(ImportError) as caught:
        import_handler_modules([module])
    assert f"cannot import handler module '{module}'" in str(caught.value)
    assert "dependency_that_is_not_installed_xyz" in str(caught.value)


def test_error_classes() -> None:
    """RetryableError keeps retry_after (None by default); PermanentError is a plain exception."""
    assert RetryableError("x", retry_after=5).retry_after == 5
    assert RetryableError("x").retry_after is None
    assert str(RetryableError("upstream 503")) == "upstream 503"
    assert issubclass(PermanentError, Exception)
    assert not issubclass(PermanentError, RetryableError)


def test_handler_type_alias_accepts_plain_functions() -> None:
    """A plain function taking an Auth0Event is a Handler."""

    def handler(event: Auth0Event) -> None:
        return None

    typed: Handler = handler
    assert callable(typed)


def test_routing_gaps_name_each_handler_listening_to_dropped_codes(register: Register) -> None:
    """One gap per handler with codes (or a category's codes) no route carries, in registration order;
    a handler of every event, or of routed codes only, has none."""
    starved = register("starved", "s", "ferrt", "auth.signup.fail")
    register("fed", "s", "f")
    register("everything", ALL_EVENTS)
    gaps = {gap.name: gap for gap in routing_gaps(parse_routes("s,f"))}
    assert [name for name in gaps if name.startswith(__name__)] == [starved]
    assert gaps[starved].dropped == ("ferrt", "fs")
    warning = gaps[starved].warning()
    assert warning.startswith(f"handler {starved} listens to ferrt, fs, which AUTH0_EVENTS_ROUTES drops: it")
    assert not [gap for gap in routing_gaps(parse_routes("s,*")) if gap.name.startswith(__name__)]
