"""Tests for the Auth0 log event catalogue."""

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kernel.catalogue import (
    _ENTRIES,
    CATALOGUE,
    CATEGORIES,
    EventType,
    codes_in_category,
    describe,
    is_category,
)
from kernel.routing import parse_routes

#: A copy of Auth0's machine-readable list of log codes (auth0/auth0-log-schemas), refreshed by
#: scripts/refresh-catalogue.
AUTH0_LIST = Path(__file__).parent / "data" / "auth0-log-schemas" / "codes.json"


def auth0_list() -> dict[str, Any]:
    """The copy of Auth0's list: its source, and each code with its category."""
    document: dict[str, Any] = json.loads(AUTH0_LIST.read_text(encoding="utf-8"))
    return document


EXPECTED_CATEGORIES = {
    "actions",
    "auth.login.fail",
    "auth.login.notification",
    "auth.login.success",
    "auth.logout.fail",
    "auth.logout.success",
    "auth.signup.fail",
    "auth.signup.success",
    "auth.silent_auth.fail",
    "auth.silent_auth.success",
    "auth.token_exchange.fail",
    "auth.token_exchange.success",
    "management.fail",
    "management.success",
    "system.notification",
    "user.fail",
    "user.notification",
    "user.success",
    "scim.event",
    "other",
}


def test_category_names_match_the_filter_page() -> None:
    """CATEGORIES holds exactly the documented stream filter names plus "other"."""
    assert set(CATEGORIES) == EXPECTED_CATEGORIES


def test_every_category_code_is_catalogued_with_that_category() -> None:
    """Each code listed under a category is in CATALOGUE and carries that category."""
    for category, codes in CATEGORIES.items():
        expected = None if category == "other" else category
        for code in codes:
            assert code in CATALOGUE, code
            assert CATALOGUE[code].category == expected, code


def test_every_catalogued_code_is_in_its_category() -> None:
    """Each entry appears in the category set it names, or in "other" when it names none."""
    for entry in _ENTRIES:
        assert entry.code in CATEGORIES[entry.category or "other"], entry.code


def test_categories_do_not_overlap() -> None:
    """No code is listed under two categories."""
    counts = Counter(code for codes in CATEGORIES.values() for code in codes)
    assert [code for code, n in counts.items() if n > 1] == []


def test_management_fail_is_empty() -> None:
    """management.fail exists but Auth0 documents no codes for it."""
    assert CATEGORIES["management.fail"] == frozenset()


@pytest.mark.parametrize(
    ("code", "category", "name"),
    [
        ("f", "auth.login.fail", "Failed Login"),
        ("fp", "auth.login.fail", "Failed Login (Incorrect Password)"),
        ("fu", "auth.login.fail", "Failed Login (Invalid Email/Username)"),
        ("s", "auth.login.success", "Success Login"),
        ("ss", "auth.signup.success", "Success Signup"),
        ("pwd_leak", None, "Breached password"),
        ("limit_wc", "system.notification", "Blocked Account"),
        ("limit_mu", "system.notification", "Blocked IP Address"),
        ("limit_sul", None, "Blocked Account"),
        ("ferrt", "auth.token_exchange.fail", "Failed Exchange"),
        ("sapi", "management.success", "Success API Operation"),
        ("slo", "auth.logout.success", "Success Logout"),
        ("flo", "auth.logout.fail", "Failed Logout"),
        ("scp", "user.success", "Success Change Password"),
        ("fcp", "user.fail", "Failed Change Password"),
        ("sdu", "user.success", "Success User Deletion"),
        ("fs", "auth.signup.fail", "Failed Signup"),
        ("fscim", "scim.event", "Failed SCIM Operation"),
        ("admin_update_launch", "system.notification", "Auth0 Update Launched"),
        ("oidc_backchannel_logout_failed", "auth.logout.fail", "Failed OIDC Back-Channel Logout"),
    ],
)
def test_known_codes(code: str, category: str | None, name: str) -> None:
    """Well-known codes have the documented category and event name."""
    entry = describe(code)
    assert entry.code == code
    assert entry.category == category
    assert entry.name == name


def test_describe_unknown_code_returns_placeholder() -> None:
    """describe() of an unknown code returns the placeholder instead of raising."""
    assert describe("zz_new_code") == EventType(
        "zz_new_code", "Unknown event type", "Not in the catalogue shipped with this version", None, False
    )


def test_codes_in_category_returns_the_set() -> None:
    """codes_in_category() returns the codes filed under a known category."""
    assert codes_in_category("auth.signup.success") == frozenset({"ss"})
    assert "pwd_leak" in codes_in_category("other")


def test_codes_in_category_rejects_unknown_name() -> None:
    """codes_in_category() raises KeyError naming the known categories for a bad name."""
    with pytest.raises(KeyError, match="auth.login.fail") as excinfo:
        codes_in_category("auth.bogus")
    assert "auth.bogus" in str(excinfo.value)
    assert "user.success" in str(excinfo.value)


def test_is_category() -> None:
    """is_category() accepts documented filter names and "other", and rejects anything else."""
    assert is_category("user.fail")
    assert is_category("other")
    assert not is_category("user")
    assert not is_category("f")


def test_other_contains_pwd_leak() -> None:
    """CATEGORIES["other"] holds codes the filter page does not list, such as pwd_leak."""
    assert "pwd_leak" in CATEGORIES["other"]


def test_entries_have_no_duplicate_codes() -> None:
    """Every code appears in the entries exactly once."""
    counts = Counter(entry.code for entry in _ENTRIES)
    assert [code for code, n in counts.items() if n > 1] == []
    assert len(CATALOGUE) == len(_ENTRIES)


def test_entries_have_names() -> None:
    """Every entry has a non-empty code and event name."""
    for entry in _ENTRIES:
        assert entry.code
        assert entry.name


def test_the_copy_of_auth0s_list_says_where_it_came_from() -> None:
    """The copy names the repository, file, commit and licence it came from, and holds each code once."""
    document = auth0_list()
    source = document["source"]
    assert source["repository"] == "https://github.com/auth0/auth0-log-schemas"
    assert source["path"] == "schemas/all-log-types.schema.json"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert source["licence"]
    codes = [entry["code"] for entry in document["codes"]]
    assert len(codes) == len(set(codes)) == document["count"]
    assert {entry["category_source"] for entry in document["codes"]} <= set(document["category_sources"])


def test_every_code_in_auth0s_list_is_catalogued_with_its_category() -> None:
    """Each code of Auth0's list is in CATALOGUE, filed under the category the copy gives it."""
    wrong = [
        (entry["code"], describe(entry["code"]).category or "other", entry["category"])
        for entry in auth0_list()["codes"]
        if entry["code"] not in CATALOGUE
        or (CATALOGUE[entry["code"]].category or "other") != entry["category"]
    ]
    assert wrong == []


def test_codes_no_longer_in_auth0s_list_stay_marked_as_such() -> None:
    """Codes of ours that Auth0's list lacks stay catalogued (old tenants' logs) with in_auth0_list False."""
    listed = {entry["code"] for entry in auth0_list()["codes"]}
    marked = {code for code, entry in CATALOGUE.items() if not entry.in_auth0_list}
    assert marked == set(CATALOGUE) - listed
    assert {"fapi", "du", "sys_update_start", "elevated_rate_limit"} <= marked


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("sdel", "auth.login.success"),
        ("sdeleacft", "auth.token_exchange.success"),
        ("sdelsa", "auth.silent_auth.success"),
        ("fdeleacft", "auth.token_exchange.fail"),
        ("fdelsa", "auth.silent_auth.fail"),
    ],
)
def test_delegated_session_codes_are_known_and_routed_by_category(code: str, category: str) -> None:
    """The delegated-session codes Auth0 added are catalogued, so a route by their category reaches them."""
    assert describe(code).name != "Unknown event type"
    assert describe(code).in_auth0_list
    assert code in codes_in_category(category)
    assert parse_routes(f"{category}=auth.by_category,*=auth.rest").queue_for(code) == "auth.by_category"
