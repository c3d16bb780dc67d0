"""Server names and user ID validity as the auth rules read them."""

from __future__ import annotations

import pytest

from atrium.auth.identifiers import domain_of, is_valid_user_id


@pytest.mark.parametrize(
    "identifier,domain",
    [
        ("@alice:example.org", "example.org"),
        ("!room:example.org:8448", "example.org:8448"),
        ("$abc:[::1]:8448", "[::1]:8448"),
        ("@odd:local:part:example.org", "local:part:example.org"),
        ("@nodomain", None),
        ("@nodomain:", None),
        ("", None),
    ],
)
def test_domain_is_everything_after_the_first_colon(identifier, domain):
    assert domain_of(identifier) == domain


@pytest.mark.parametrize(
    "user_id,valid",
    [
        ("@alice:example.org", True),
        ("@Historical=Name:example.org", True),
        ("alice:example.org", False),
        ("@alice", False),
        ("@alice:", False),
        (5, False),
    ],
)
def test_user_id_validity(user_id, valid):
    assert is_valid_user_id(user_id) == valid
