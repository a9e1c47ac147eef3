"""Two ``dns01-broker serve`` processes on one PostgreSQL database, as replicas behind a
load balancer run: what one is told, the other serves; tokens, leadership and the
embedded zone are shared through the database, never through one replica's memory."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from tests.peers import PostgresCluster
from tests.process import Served, start
from tests.providers.aws import MotoServer, route53_config, route53_txt
from tests.support import write_config

pytestmark = pytest.mark.timeout(120)

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
NAME = "_acme-challenge.www.example.test."


class Replica:
    def __init__(self, served: Served, session: aiohttp.ClientSession, token: str) -> None:
        self.served = served
        self.session = session
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with self.session.request(
            method, self.served.http + path, json=body, headers=headers
        ) as response:
            if response.content_type.endswith("json"):
                return response.status, await response.json(content_type=None)
            return response.status, await response.text()

    async def present(self, value: str, **extra: Any) -> tuple[int, Any]:
        return await self.call(
            "POST", "/v1/present", {"domain": "www.example.test", "value": value, **extra}
        )

    async def query(self, name: str) -> tuple[str, list[str]]:
        answer = await dns.asyncquery.tcp(  # TCP: fifty values do not fit 512 bytes
            dns.message.make_query(name, "TXT"),
            self.served.dns[0],
            port=self.served.dns[1],
            timeout=2,
        )
        values = sorted(b"".join(r.strings).decode() for rrset in answer.answer for r in rrset)
        return dns.rcode.to_text(answer.rcode()), values

    async def leads(self) -> bool:
        _, text = await self.call("GET", "/metrics")
        match = re.search(r"^dns01_broker_leader (\S+)$", text, re.M)
        return match is not None and float(match.group(1)) == 1.0


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> float:
    """Seconds until ``check`` holds; fails the test when it does not within ``seconds``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "the condition never held"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


StartReplicas = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
def replicas(
    tmp_path: Path, serve: list[Served], postgres_url: str, session: aiohttp.ClientSession
) -> StartReplicas:
    async def start_replicas(count: int = 2, extra: str = "", url: str = postgres_url) -> list:
        config = write_config(tmp_path, extra, state="var", store_url=url)
        started = [await start(config, serve) for _ in range(count)]
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        return [Replica(served, session, token) for served in started]

    return start_replicas


async def test_what_one_replica_is_told_the_other_serves(replicas: StartReplicas):
    a, b = await replicas()
    status, record = await a.present(VALUE)
    assert status == 201
    await eventually(lambda: _serves(b, NAME, [VALUE]))
    status, _ = await b.call("POST", "/v1/cleanup", {"domain": "www.example.test", "value": VALUE})
    assert status == 200
    assert await b.query(NAME) == ("NXDOMAIN", [])  # the replica that was told: at once
    await eventually(lambda: _serves(a, NAME, []))
    status, seen_by_a = await a.call("GET", f"/v1/challenges/{record['id']}")
    assert (status, seen_by_a["state"]) == (200, "removed")


async def test_a_propagation_report_made_on_one_replica_is_shown_by_the_other(
    replicas: StartReplicas,
):
    a, b = await replicas()
    status, record = await a.present(VALUE, wait=True, timeout=10)
    assert (status, record["propagation"]["ready"]) == (201, True)
    status, seen = await b.call("GET", f"/v1/challenges/{record['id']}")
    assert status == 200
    assert seen["propagation"] == record["propagation"]


@pytest.mark.parametrize("per_replica", [25])
async def test_concurrent_presents_for_one_name_split_across_replicas_keep_every_value(
    replicas: StartReplicas, per_replica: int
):
    a, b = await replicas(extra="[challenges]\nmax_values_per_name = 64\n")
    values = [f"value-{i:02d}-" + "x" * 34 for i in range(2 * per_replica)]
    results = await asyncio.gather(
        *(
            replica.present(value)
            for replica, value in zip([a, b] * per_replica, values, strict=True)
        )
    )
    assert [status for status, _ in results] == [201] * len(values)
    for replica in (a, b):
        await eventually(lambda replica=replica: _serves(replica, NAME, sorted(values)))


async def test_the_value_cap_holds_across_replicas(replicas: StartReplicas):
    a, b = await replicas(extra="[challenges]\nmax_values_per_name = 4\n")
    values = [f"capped-{i:02d}-" + "x" * 33 for i in range(40)]
    pairs = zip([a, b] * 20, values, strict=True)
    results = await asyncio.gather(*(replica.present(value) for replica, value in pairs))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 4 + [409] * 36
    await eventually(lambda: _count_is(b, NAME, 4))


async def test_route53_upserts_from_two_replicas_lose_no_value(
    replicas: StartReplicas, moto: MotoServer
):
    route53 = (
        route53_config(moto, "replicas")
        + """
[challenges]
max_values_per_name = 64
"""
    )
    a, b = await replicas(extra=route53)
    values = [f"r53-{i:02d}-" + "y" * 36 for i in range(40)]
    body = [{"domain": "www.r53.test", "value": value} for value in values]
    results = await asyncio.gather(
        *(
            replica.call("POST", "/v1/present", item)
            for replica, item in zip([a, b] * 20, body, strict=True)
        )
    )
    assert [status for status, _ in results] == [201] * len(values)
    assert route53_txt(moto, "_acme-challenge.www.r53.test.") == sorted(values)


async def test_a_token_revoked_on_one_replica_is_refused_by_the_other(replicas: StartReplicas):
    a, b = await replicas()
    status, created = await a.call(
        "POST", "/v1/tokens", {"name": "web1", "allow": ["www.example.test"]}
    )
    assert status == 201
    web1 = created["token"]
    assert (await b.call("POST", "/v1/present", _body(VALUE), web1))[0] == 201  # cached on b
    assert (await a.call("DELETE", "/v1/tokens/web1"))[0] == 200
    waited = await eventually(
        lambda: _status_is(b.call("POST", "/v1/present", _body("other" + VALUE[5:]), web1), 401),
        seconds=2,
    )
    assert waited < 2


async def test_the_other_replica_takes_over_expiry_when_the_leader_is_killed(
    replicas: StartReplicas,
):
    a, b = await replicas(extra="[challenges]\nreconcile_interval = 0.2\n")
    await eventually(lambda: _one_leads(a, b))
    leader, other = (a, b) if await a.leads() else (b, a)
    assert not await other.leads()

    leader.served.process.send_signal(signal.SIGKILL)
    await leader.served.process.wait()
    await eventually(other.leads, seconds=10)

    status, _ = await other.present(VALUE, lease=1)
    assert status == 201
    assert await other.query(NAME) == ("NOERROR", [VALUE])
    await eventually(lambda: _serves(other, NAME, []), seconds=10)


async def test_a_dropped_listening_connection_is_noticed_reloaded_and_reported(
    replicas: StartReplicas, postgres_cluster: PostgresCluster, postgres_url: str
):
    url = await _as_role(postgres_cluster, postgres_url, "replica")
    (b,) = await replicas(count=1, url=url)
    assert (await b.call("GET", "/readyz"))[0] == 200

    async with _admin(postgres_url) as admin:
        await admin.execute("ALTER ROLE replica NOLOGIN")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = 'replica' AND query LIKE 'LISTEN%'"
        )
        await eventually(lambda: _status_is(b.call("GET", "/readyz"), 503))
        _, readiness = await b.call("GET", "/readyz")
        assert readiness["checks"]["changes"]["ok"] is False
        assert "other replicas' changes" in readiness["checks"]["changes"]["detail"]
        # another replica's present while this one hears nothing
        now = time.time()
        await admin.execute(
            "INSERT INTO challenges (id, fqdn, value, zone, provider, owner, created_at, "
            "expires_at, state) VALUES ('missed', $1, $2, 'example.test.', 'embedded', 'x', "
            "$3, $4, 'present')",
            NAME, VALUE, now, now + 600,
        )  # fmt: skip
        assert await b.query(NAME) == ("NXDOMAIN", [])
        await admin.execute("ALTER ROLE replica LOGIN")

    await eventually(lambda: _status_is(b.call("GET", "/readyz"), 200))
    assert await b.query(NAME) == ("NOERROR", [VALUE])


async def test_a_registration_on_one_replica_is_served_and_updated_through_the_other(
    replicas: StartReplicas, session: aiohttp.ClientSession
):
    a, b = await replicas()
    async with session.post(a.served.http + "/register") as response:
        account = await response.json(content_type=None)
    name = account["fulldomain"] + "."
    await eventually(lambda: _rcode_is(b, name, "NOERROR"))  # NODATA, not NXDOMAIN
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    update = {"subdomain": account["subdomain"], "txt": VALUE}
    async with session.post(b.served.http + "/update", json=update, headers=headers) as response:
        assert response.status == 200
    await eventually(lambda: _serves(a, name, [VALUE]))
    username = account["username"]
    assert (await b.call("DELETE", f"/v1/registrations/{username}"))[0] == 200
    await eventually(lambda: _rcode_is(a, name, "NXDOMAIN"))


def _body(value: str) -> dict[str, str]:
    return {"domain": "www.example.test", "value": value}


async def _serves(replica: Replica, name: str, values: list[str]) -> bool:
    return (await replica.query(name))[1] == sorted(values)


async def _count_is(replica: Replica, name: str, count: int) -> bool:
    return len((await replica.query(name))[1]) == count


async def _rcode_is(replica: Replica, name: str, rcode: str) -> bool:
    return (await replica.query(name))[0] == rcode


async def _status_is(call: Awaitable[tuple[int, Any]], status: int) -> bool:
    return (await call)[0] == status


async def _one_leads(a: Replica, b: Replica) -> bool:
    return [await a.leads(), await b.leads()].count(True) == 1


def _admin(url: str) -> Any:
    class Admin:
        async def __aenter__(self) -> asyncpg.Connection:
            self.connection = await asyncpg.connect(url)
            return self.connection

        async def __aexit__(self, *_: object) -> None:
            await self.connection.close()

    return Admin()


async def _as_role(cluster: PostgresCluster, url: str, role: str) -> str:
    """``url`` for a login role of its own (so its connections can be refused)."""
    async with _admin(url) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    return url.replace("postgres@", f"{role}@", 1)
