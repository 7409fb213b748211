"""Unit tests for app.auth: the Authorization header token, verbatim or with a Bearer prefix."""

from __future__ import annotations

import pytest

from app.auth import is_authorized, token_from_header

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(TOKEN, TOKEN, id="verbatim"),
        pytest.param(f"Bearer {TOKEN}", TOKEN, id="bearer"),
        pytest.param(f"bearer {TOKEN}", TOKEN, id="lowercase-scheme"),
        pytest.param(f"BEARER {TOKEN}", TOKEN, id="uppercase-scheme"),
        pytest.param(f"BeArEr {TOKEN}", TOKEN, id="mixed-case-scheme"),
        pytest.param(f"Bearer    {TOKEN}   ", TOKEN, id="extra-spaces-after-scheme"),
        pytest.param(f"  Bearer {TOKEN}", TOKEN, id="leading-spaces"),
        pytest.param(f"  {TOKEN} \t", TOKEN, id="verbatim-padded"),
        pytest.param("Bearer", "Bearer", id="scheme-alone-is-the-value"),
        pytest.param("Bearer   ", "Bearer", id="scheme-and-spaces"),
        pytest.param("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz", id="other-scheme-kept-whole"),
        pytest.param("", "", id="empty"),
        pytest.param("   ", "", id="blank"),
        pytest.param(None, "", id="none"),
    ],
)
def test_token_from_header(header: str | None, expected: str) -> None:
    """token_from_header strips whitespace and a case-insensitive Bearer prefix, and nothing else."""
    assert token_from_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [TOKEN, f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} ", f" {TOKEN} "],
    ids=["verbatim", "bearer", "lowercase", "uppercase-spaces", "padded"],
)
def test_configured_token_is_accepted_in_either_form(header: str) -> None:
    """The configured token is accepted verbatim or as Bearer <token>, in any scheme case."""
    assert is_authorized(header, [TOKEN])


@pytest.mark.parametrize(
    "header",
    [
        "wrong-token",
        f"Bearer wrong-{TOKEN}",
        TOKEN.upper(),
        TOKEN[:-1],
        f"{TOKEN}x",
        f"Token {TOKEN}",
        f"Basic {TOKEN}",
        "",
        None,
    ],
    ids=[
        "wrong",
        "bearer-wrong",
        "case-differs",
        "prefix",
        "longer",
        "token-scheme",
        "basic",
        "empty",
        "none",
    ],
)
def test_wrong_or_missing_token_is_refused(header: str | None) -> None:
    """Anything but the exact configured token (or Bearer + it) is refused."""
    assert not is_authorized(header, [TOKEN])


@pytest.mark.parametrize("header", ["old-token", "new-token", "Bearer new-token", "Bearer old-token"])
def test_any_of_several_tokens_is_accepted_for_rotation(header: str) -> None:
    """During rotation, each of several configured tokens is accepted."""
    assert is_authorized(header, ("old-token", "new-token"))


def test_a_token_outside_the_rotation_set_is_refused() -> None:
    """With several tokens configured, a header matching none of them is refused."""
    assert not is_authorized("third-token", ("old-token", "new-token"))


def test_tokens_can_be_any_iterable() -> None:
    """is_authorized accepts a generator of tokens, as settings may pass any iterable."""
    assert is_authorized(TOKEN, (t for t in ["other", TOKEN]))


@pytest.mark.parametrize("header", ["", "   ", None, "Bearer", "Bearer "])
def test_empty_configured_token_never_matches(header: str | None) -> None:
    """An empty configured token never authorizes, not even an empty or missing header."""
    assert not is_authorized(header, [""])
    assert not is_authorized(header, ["", ""])


def test_empty_token_in_the_list_does_not_block_the_others() -> None:
    """An empty entry among the tokens is ignored; the real token still works."""
    assert is_authorized(TOKEN, ["", TOKEN])
    assert not is_authorized("", ["", TOKEN])


def test_no_tokens_configured_refuses_everything() -> None:
    """With no tokens configured, no header is authorized (opting out is the receiver's job)."""
    assert not is_authorized(TOKEN, [])
    assert not is_authorized(None, [])


def test_non_ascii_tokens_are_compared_as_utf8() -> None:
    """Tokens with non-ASCII characters match themselves and do not raise."""
    assert is_authorized("tökén-ü", ["tökén-ü"])
    assert not is_authorized("tokén-ü", ["tökén-ü"])
