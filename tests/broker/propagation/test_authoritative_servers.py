"""The checker against real knotd servers on loopback, pointed at by zone overrides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.propagation import PropagationReport
from tests.broker.propagation.conftest import MakeChecker, StartKnot
from tests.broker.propagation.servers import (
    free_port,
    hostport,
    ipv6_loopback_available,
    zone_file,
)
from tests.support import IN_CI

ZONE = "example.test."
NAME = "_acme-challenge.www.example.test."
VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
EXAMPLE = zone_file(ZONE, {"ns1": ["127.0.0.1"]})


async def two_servers(start_knot: StartKnot) -> tuple[list[str], list]:
    first = await start_knot({ZONE: EXAMPLE})
    second = await start_knot({ZONE: EXAMPLE})
    return [*first.servers, *second.servers], [first, second]


async def test_value_on_one_server_is_not_ready_until_the_second_serves_it(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, (first, second) = await two_servers(start_knot)
    checker = make_checker(nameservers={ZONE: servers})
    await first.add_txt(ZONE, NAME, VALUE)

    report = await checker.check(NAME, VALUE)

    assert not report.ready
    assert report.zone == ZONE
    assert report.target == NAME
    assert [(s.port, s.answered, s.seen, s.error) for s in report.servers] == [
        (first.address[1], True, True, None),
        (second.address[1], True, False, None),
    ]
    assert all(s.nameserver == "override" and s.checked_at for s in report.servers)

    updates: list[PropagationReport] = []
    three_rounds = asyncio.Event()

    def on_update(report: PropagationReport) -> None:
        updates.append(report)
        if len(updates) == 3:
            three_rounds.set()

    waiter = asyncio.create_task(checker.wait(NAME, VALUE, timeout=20, on_update=on_update))
    try:
        await three_rounds.wait()
        assert not waiter.done()
        await second.add_txt(ZONE, NAME, VALUE)
        report = await waiter
    finally:
        waiter.cancel()
    assert report.ready
    assert report.error is None
    assert all(s.answered and s.seen for s in report.servers)
    assert not any(update.ready for update in updates[:-1])
    assert updates[-1] is report


async def test_txt_with_several_strings_is_joined_and_match_is_exact(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    knot = await start_knot({ZONE: EXAMPLE})
    checker = make_checker(nameservers={ZONE: knot.servers})
    await knot.update(ZONE, add=[(NAME, "TXT", '"LoqXcYV8q5ONbJQxbmR7" "SCTNo3tiAXDfowyjxAjEuX0"')])

    assert (await checker.check(NAME, VALUE)).ready
    assert not (await checker.check(NAME, VALUE.lower())).ready
    assert not (await checker.check(NAME, VALUE[:-1])).ready


async def test_txt_behind_a_cname_in_the_answer_is_found(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    knot = await start_knot({ZONE: EXAMPLE})
    checker = make_checker(nameservers={ZONE: knot.servers})
    await knot.add_txt(ZONE, "real.example.test.", VALUE)
    report = await checker.check(NAME, VALUE)
    assert not report.ready
    # The CNAME appears after the checker cached "no CNAME here": the server's answer
    # to the TXT query holds the chain, which is followed.
    await knot.update(ZONE, add=[(NAME, "CNAME", "real.example.test.")])
    report = await checker.check(NAME, VALUE)
    assert report.ready
    assert report.target == NAME


async def test_deadline_report_says_which_servers_lack_the_value(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, (first, second) = await two_servers(start_knot)
    checker = make_checker(nameservers={ZONE: servers})
    await first.add_txt(ZONE, NAME, VALUE)

    report = await checker.wait(NAME, VALUE, timeout=0.5)

    assert not report.ready
    assert report.elapsed >= 0.5
    assert report.error is not None
    assert report.error.startswith("deadline passed after 0.5 s: 1 of 2 nameserver addresses")
    assert f"127.0.0.1:{second.address[1]} (answered without the value)" in report.error
    (lacking,) = report.lacking()
    assert (lacking.port, lacking.answered, lacking.seen) == (second.address[1], True, False)
    body = report.to_json()
    assert body["ready"] is False
    assert [server["seen"] for server in body["servers"]] == [True, False]


async def test_refusing_server_is_reported_lame_and_blocks_policy_all(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, knots = await two_servers(start_knot)
    other = await start_knot({"other.test.": zone_file("other.test.", {"ns1": ["127.0.0.1"]})})
    checker = make_checker(nameservers={ZONE: [*servers, *other.servers]})
    for knot in knots:
        await knot.add_txt(ZONE, NAME, VALUE)

    report = await checker.check(NAME, VALUE)

    assert not report.ready
    lame = report.servers[2]
    assert (lame.answered, lame.seen, lame.error) == (False, False, "REFUSED")


async def test_referral_from_a_parent_server_is_reported_not_authoritative(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    knot = await start_knot({ZONE: EXAMPLE})
    parent = await start_knot(
        {"test.": zone_file("test.", {"ns": ["127.0.0.1"]}, "example NS ns1.example")}
    )
    checker = make_checker(nameservers={ZONE: [*knot.servers, *parent.servers]})
    await knot.add_txt(ZONE, NAME, VALUE)

    report = await checker.check(NAME, VALUE)

    assert not report.ready
    assert report.servers[1].error == "not authoritative (referral to example.test.)"
    assert not report.servers[1].answered


async def test_quorum_is_ready_with_a_majority_while_unreachable_servers_are_reported(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, knots = await two_servers(start_knot)
    dead = f"127.0.0.1:{free_port(['127.0.0.1'])}"
    for knot in knots:
        await knot.add_txt(ZONE, NAME, VALUE)
    quorum = make_checker(nameservers={ZONE: [*servers, dead]}, policy="quorum")
    every = make_checker(nameservers={ZONE: [*servers, dead]}, policy="all", query_timeout=0.3)

    ready = await quorum.wait(NAME, VALUE, timeout=10)
    not_ready = await every.wait(NAME, VALUE, timeout=0.5)

    assert ready.ready
    assert [s.seen for s in ready.servers] == [True, True, False]
    assert not not_ready.ready
    unreachable = not_ready.servers[2]
    assert not unreachable.answered
    assert unreachable.error is not None
    assert "refused" in unreachable.error or "timeout" in unreachable.error
    assert dead.replace("127.0.0.1:", "") in (not_ready.error or "")


async def test_quorum_is_not_met_by_half_of_the_servers(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, (first, _) = await two_servers(start_knot)
    checker = make_checker(nameservers={ZONE: servers}, policy="quorum")
    await first.add_txt(ZONE, NAME, VALUE)
    assert not (await checker.check(NAME, VALUE)).ready


async def test_truncated_udp_answer_is_read_over_tcp(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    knot = await start_knot({ZONE: EXAMPLE})
    checker = make_checker(nameservers={ZONE: knot.servers})
    others = [f"{index:03d}-" + "x" * 200 for index in range(30)]
    await knot.add_txt(ZONE, NAME, *others, VALUE)
    before = knot.stats()

    report = await checker.check(NAME, VALUE)

    after = knot.stats()
    assert report.ready
    assert after["request-protocol[tcp4]"] - before.get("request-protocol[tcp4]", 0) == 1
    assert after["request-protocol[udp4]"] - before.get("request-protocol[udp4]", 0) >= 1


async def test_ipv6_loopback_server_is_checked(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    if not ipv6_loopback_available():
        message = "::1 is not available on this machine"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    v6 = await start_knot({ZONE: EXAMPLE}, listen=[("::1", free_port(["::1"]))])
    v4 = await start_knot({ZONE: EXAMPLE})
    checker = make_checker(nameservers={ZONE: [*v6.servers, *v4.servers]})
    await v4.add_txt(ZONE, NAME, VALUE)
    assert not (await checker.check(NAME, VALUE)).ready
    await v6.add_txt(ZONE, NAME, VALUE)

    report = await checker.check(NAME, VALUE)

    assert report.ready
    assert report.servers[0].address == "::1"
    assert hostport(("::1", report.servers[0].port)) == v6.servers[0]


async def test_concurrent_waiters_share_one_query_per_server_per_round(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    servers, (first, second) = await two_servers(start_knot)
    checker = make_checker(nameservers={ZONE: servers})
    await first.add_txt(ZONE, NAME, VALUE)
    rounds = [0] * 20
    four_rounds_each = asyncio.Event()

    def counter(index: int) -> Callable[[PropagationReport], None]:
        def count(_: PropagationReport) -> None:
            rounds[index] += 1
            if min(rounds) == 4:
                four_rounds_each.set()

        return count

    waiters = [
        asyncio.create_task(checker.wait(NAME, VALUE, timeout=20, on_update=counter(i)))
        for i in range(20)
    ]
    try:
        await four_rounds_each.wait()
        await second.add_txt(ZONE, NAME, VALUE)
        reports = await asyncio.gather(*waiters)
    finally:
        for waiter in waiters:
            waiter.cancel()

    assert all(report.ready for report in reports)
    assert first.txt_queries() == 1
    assert second.txt_queries() <= max(rounds)
    assert checker.queries_sent <= max(rounds) + 1


async def test_waits_for_many_names_on_one_server_pace_themselves_together(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    server = await start_knot({ZONE: EXAMPLE})
    paced = make_checker(nameservers={ZONE: server.servers}, server_rate=25)
    unpaced = make_checker(nameservers={ZONE: server.servers}, server_rate=1e6)
    names = [f"_acme-challenge.n{index}.example.test." for index in range(50)]

    # side by side, so that a busy machine slows both alike
    reports = await asyncio.gather(
        *(checker.wait(n, VALUE, timeout=1.5) for n in names for checker in (paced, unpaced))
    )

    assert not any(report.ready for report in reports)
    # unpaced, each of the 50 waits polls up to 20 times in 1.5 s; paced at 25 queries a
    # second together, each pauses about 50 / 25 = 2 s once all have started
    assert paced.queries_sent <= 150
    assert 2 * paced.queries_sent < unpaced.queries_sent


async def test_cname_loop_ends_the_wait_with_an_error(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    loop = zone_file(
        ZONE,
        {"ns1": ["127.0.0.1"]},
        f"{NAME} CNAME a.example.test.",
        "a CNAME b",
        f"b CNAME {NAME}",
    )
    knot = await start_knot({ZONE: loop})
    checker = make_checker(nameservers={ZONE: knot.servers})

    report = await checker.wait(NAME, VALUE, timeout=30)

    assert not report.ready
    assert report.error == (f"CNAME loop: {NAME} -> a.example.test. -> b.example.test. -> {NAME}")
    assert report.elapsed < 30


async def test_settings_overrides_win_over_local_nameservers(
    start_knot: StartKnot, make_checker: MakeChecker
) -> None:
    knot = await start_knot({ZONE: EXAMPLE})
    await knot.add_txt(ZONE, NAME, VALUE)
    dead = ("127.0.0.1", free_port(["127.0.0.1"]))
    local_only = make_checker(local_nameservers={ZONE: [knot.address]})
    overridden = make_checker(local_nameservers={ZONE: [dead]}, nameservers={ZONE: knot.servers})

    assert (await local_only.check(NAME, VALUE)).ready
    report = await overridden.check(NAME, VALUE)
    assert report.ready
    assert [s.port for s in report.servers] == [knot.address[1]]
