from __future__ import annotations

import pytest
from pydantic import ValidationError

from broker.propagation import PropagationSettings, parse_server


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        (" 192.0.2.1:5353 ", ("192.0.2.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
        ("[::1]", ("::1", 53)),
    ],
)
def test_server_addresses_are_ip_with_optional_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text", ["ns1.example.test", "192.0.2.1:0", "192.0.2.1:70000", "[::1]:x", "", "1.2.3:53"]
)
def test_server_addresses_that_are_not_ip_and_port_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"server address|port"):
        parse_server(text)


def test_defaults_poll_fast_at_first_and_wait_two_minutes() -> None:
    settings = PropagationSettings()
    assert settings.resolvers == []
    assert settings.nameservers == {}
    assert settings.policy == "all"
    assert (settings.timeout, settings.query_timeout, settings.check_timeout) == (120.0, 1.0, 5.0)
    assert (settings.first_interval, settings.backoff, settings.max_interval) == (0.05, 1.02, 1.0)
    assert settings.server_rate == 200.0
    assert settings.check_resolvers == []


def test_a_server_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValidationError, match="server_rate"):
        PropagationSettings(server_rate=0)


def test_zone_overrides_are_normalised_and_lists_may_be_comma_separated() -> None:
    settings = PropagationSettings.model_validate(
        {
            "nameservers": {"Example.Test": "127.0.0.1:5300, [::1]:5300"},
            "resolvers": "192.0.2.53, 192.0.2.54:5353",
        }
    )
    assert settings.nameserver_overrides() == {
        "example.test.": [("127.0.0.1", 5300), ("::1", 5300)]
    }
    assert settings.resolver_addresses() == [("192.0.2.53", 53), ("192.0.2.54", 5353)]


def test_every_problem_in_the_section_is_reported() -> None:
    with pytest.raises(ValidationError) as caught:
        PropagationSettings.model_validate(
            {
                "resolvers": ["resolver.example"],
                "nameservers": {"example.test.": [], "a..b": ["192.0.2.1"]},
                "policy": "most",
                "query_timeout": 0,
                "colour": "blue",
            }
        )
    fields = {error["loc"][0] for error in caught.value.errors()}
    assert fields == {"resolvers", "nameservers", "policy", "query_timeout", "colour"}


def test_first_interval_longer_than_the_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="first_interval"):
        PropagationSettings(first_interval=2.0, max_interval=1.0)
