"""Where dns-01 values go: the DnsSolver protocol, and the solver that calls a broker's
native HTTP API (local or remote) with a scoped token."""

from __future__ import annotations

import json
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp

from broker.acme.errors import NotPropagatedError, SolverError

MAX_BROKER_WAIT = 600.0


@dataclass(frozen=True, slots=True)
class PresentedChallenge:
    """What a solver presented: the certificate name (``*.example.test`` or
    ``example.test``), the TXT value, and where it went if the solver knows."""

    domain: str
    value: str
    fqdn: str | None = None
    record_id: str | None = None


class DnsSolver(Protocol):
    """Puts dns-01 values where the CA will look, and takes them away again.

    ``present`` must be idempotent for the same (domain, value) and must keep other
    values at the same name (a wildcard and its apex share one); ``wait_propagated``
    returns once the value is served everywhere the CA may look (with a one-line account
    of which nameservers serve it, when the solver knows), and raises
    NotPropagatedError after ``seconds``; ``cleanup`` removes only that value and
    succeeds when it is already gone. Other failures raise SolverError.
    """

    async def present(self, domain: str, value: str, /) -> PresentedChallenge: ...

    async def wait_propagated(
        self, handle: PresentedChallenge, seconds: float, /
    ) -> str | None: ...

    async def cleanup(self, handle: PresentedChallenge, /) -> None: ...


class PersistGrantor(Protocol):
    """Makes (or finds) the dns-persist-01 grant that lets ``account_uri`` at the CA
    ``issuer`` be issued certificates for ``domain`` (and names below, with ``wildcard``),
    and returns once every authoritative nameserver serves it (a one-line account of the
    record and its servers), raising NotPropagatedError after ``seconds``. Grants stay:
    they are standing permissions, removed by their owner or at their persistUntil."""

    async def grant(
        self, domain: str, issuer: str, account_uri: str, wildcard: bool, seconds: float, /
    ) -> str: ...


class BrokerApiSolver:
    """A DnsSolver over a broker's native API: ``POST /v1/present`` and ``/v1/cleanup``.

    ``token`` is a bearer token whose scope covers the names. Waiting is the broker's
    own propagation check (``"wait": true``), which answers once every authoritative
    nameserver serves the value. Without ``session`` one is opened (TLS verified with
    ``ssl`` or the system store) and closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 30.0,
        lease: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.lease = lease
        self._own_session = session is None
        self._session = session
        self._ssl = ssl

    def __repr__(self) -> str:
        return f"BrokerApiSolver({self.base_url!r}, token=<set>)"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            verify = self._ssl if self._ssl is not None else True
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=verify))
        return self._session

    async def present(self, domain: str, value: str) -> PresentedChallenge:
        body: dict[str, Any] = {"domain": domain, "value": value}
        if self.lease is not None:
            body["lease"] = self.lease
        answer = await self._call("/v1/present", body, domain, self.timeout)
        return _handle(domain, value, answer)

    async def wait_propagated(self, handle: PresentedChallenge, seconds: float) -> str | None:
        """Present again with ``wait`` (idempotent): answers once every authoritative
        nameserver serves the value, or 504 after ``seconds``."""
        wait = min(max(seconds, 0.001), MAX_BROKER_WAIT)
        body = {"domain": handle.domain, "value": handle.value, "wait": True, "timeout": wait}
        answer = await self._call("/v1/present", body, handle.domain, wait + self.timeout)
        report = answer.get("propagation")
        return servers_summary(report.get("servers")) if isinstance(report, dict) else None

    async def cleanup(self, handle: PresentedChallenge) -> None:
        body = {"domain": handle.domain, "value": handle.value}
        await self._call("/v1/cleanup", body, handle.domain, self.timeout)

    async def grant(
        self, domain: str, issuer: str, account_uri: str, wildcard: bool, seconds: float
    ) -> str:
        """``POST /v1/persist`` with ``wait``: the token needs the persist right (or admin)."""
        wait = min(max(seconds, 0.001), MAX_BROKER_WAIT)
        body = {
            "domain": domain, "issuer": issuer, "account_uri": account_uri,
            "wildcard": wildcard, "wait": True, "timeout": wait,
        }  # fmt: skip
        answer = await self._call("/v1/persist", body, domain, wait + self.timeout)
        report = answer.get("propagation")
        served = servers_summary(report.get("servers")) if isinstance(report, dict) else None
        record = f'{answer.get("fqdn")} "{answer.get("value")}"'
        return f"{record}; served by {served}" if served else record

    async def _call(
        self, path: str, body: Mapping[str, Any], domain: str, seconds: float
    ) -> Mapping[str, Any]:
        url = self.base_url + path
        try:
            async with self._client().post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise SolverError(domain, f"{url} did not answer within {seconds:g} s") from None
        except aiohttp.ClientError as exc:
            raise SolverError(domain, f"{url}: {exc or type(exc).__name__}") from exc
        document = _json_object(text)
        if status >= 400:
            raise _solver_error(domain, url, status, document, text)
        return document


def servers_summary(servers: object) -> str | None:
    """``ns1.example.com 192.0.2.1 ✓, ns2.example.com 192.0.2.2 ✗`` from a broker's
    propagation report (its ``servers``)."""
    if not isinstance(servers, list) or not servers:
        return None
    parts = []
    for server in servers:
        if isinstance(server, dict):
            mark = "✓" if server.get("seen") else "✗"
            parts.append(f"{server.get('nameserver')} {server.get('address')} {mark}")
    return ", ".join(parts) or None


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _handle(domain: str, value: str, answer: Mapping[str, Any]) -> PresentedChallenge:
    fqdn, record_id = answer.get("fqdn"), answer.get("id")
    return PresentedChallenge(
        domain,
        value,
        fqdn if isinstance(fqdn, str) else None,
        record_id if isinstance(record_id, str) else None,
    )


def _solver_error(
    domain: str, url: str, status: int, problem: Mapping[str, Any], text: str
) -> SolverError:
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    detail = str(problem.get("detail") or text[:200] or f"HTTP {status}")
    if status == 504 or code == "propagation-timeout":
        waiting = _servers_without_value(problem.get("propagation"))
        if waiting:
            detail += f"; not yet served by {waiting}"
        return NotPropagatedError(domain, detail, status=status, code=code)
    return SolverError(
        domain, f"{url} answered {status} {code or ''}: {detail}", status=status, code=code
    )


def _servers_without_value(report: object) -> str:
    if not isinstance(report, Mapping) or not isinstance(report.get("servers"), list):
        return ""
    missing = [
        f"{server.get('nameserver')} ({server.get('address')}: "
        f"{server.get('error') or 'value not seen'})"
        for server in report["servers"]
        if isinstance(server, Mapping) and server.get("counted", True) and not server.get("seen")
    ]
    return ", ".join(missing)
