"""``dns.workers`` > 1: the DNS listeners served by worker processes.

By default the broker binds one UDP socket and one listening TCP socket per listen
address and hands the same sockets to every worker (broker.dnsserver.worker):
whichever worker is free reads the next query, however few clients there are, and
queries wait in the socket while a worker restarts. With ``reuseport``, each worker
binds its own pair with SO_REUSEPORT instead and the kernel spreads clients over them
by a hash of their address and port (even with many clients, uneven with few; a dying
worker loses what its socket held). Every change to the embedded zones is sent to
every worker as the changed names' whole content (and the SOA serial) on the next turn
of the event loop; a worker (re)started gets a snapshot of every zone before it binds.
UPDATEs and TSIG-signed messages come back to the broker, which answers them as the
in-process server does. A worker that exits is logged and started again (after 0.1 s,
doubling up to 5 s while it keeps dying within 10 s of starting).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.dnsserver.channel import Message, nodes_message, read_message, write_message
from broker.dnsserver.ratelimit import RateLimit
from broker.dnsserver.responder import Responder
from broker.dnsserver.server import Signers, signed_dispatcher
from broker.dnsserver.updates import SignedDispatcher
from providers.embedded import EmbeddedZone, ZoneSet

log = logging.getLogger(__name__)

TCP_BACKLOG = 1024
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0
STABLE_AFTER = 10.0
PORT_ATTEMPTS = 10

Pair = tuple[socket.socket, socket.socket]


@dataclass(eq=False)
class _Worker:
    index: int
    pid: int | None = None
    writer: asyncio.StreamWriter | None = None
    probe: tuple[str, int] | None = None
    answers: dict[tuple[str, str], int] = field(default_factory=dict)
    limited: dict[str, int] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    process: asyncio.subprocess.Process | None = None


class DnsWorkers:
    """Serves ``zones`` on every (host, port) of ``listen`` from ``count`` processes."""

    def __init__(
        self,
        zones: ZoneSet,
        listen: Sequence[tuple[str, int]],
        count: int,
        *,
        max_udp_payload: int = 1232,
        tcp_idle_timeout: float = 10.0,
        signers: Signers | None = None,
        max_signed_in_flight: int = 64,
        apex_zones: Sequence[EmbeddedZone] = (),
        rate_limit: RateLimit | None = None,
        log_settings: tuple[str, str] = ("INFO", "text"),
        reuseport: bool = False,
    ) -> None:
        self._zones = zones
        self._listen_on = list(listen)
        self._count = count
        self._options: Message = {
            "max_udp_payload": max_udp_payload,
            "tcp_idle_timeout": tcp_idle_timeout,
            "apex": [zone.settings.name for zone in apex_zones],
            "rate_limit": None if rate_limit is None else dataclasses.asdict(rate_limit),
            "update": signers is not None,
            "max_in_flight": max_signed_in_flight,
            "log": list(log_settings),
        }
        self._signed: SignedDispatcher | None = None
        if signers is not None:
            responder = Responder(zones, max_udp_payload, 1000, {z.origin: z for z in apex_zones})
            self._signed = signed_dispatcher(
                signers, responder, max_udp_payload, max_signed_in_flight
            )
        self._workers = [_Worker(index) for index in range(count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._addresses: list[tuple[str, int]] = []
        self._reuseport = reuseport
        self._shared: list[Pair] = []
        self._spare: list[Pair] = []
        self._dirty: dict[EmbeddedZone, set[str]] = {}
        self._retired_answers: dict[tuple[str, str], int] = {}
        self._retired_limited: dict[str, int] = {}
        self._stopping = False
        self.restarts = 0
        zones.watch_names(self._changed)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self._addresses)

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None and w.ready.is_set()]

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("DnsWorkers.start() called while running")
        first = [await _bind_first(h, p, self._reuseport) for h, p in self._listen_on]
        self._addresses = [_address(udp) for udp, _ in first]
        if self._reuseport:
            self._spare = first
        else:
            self._shared = first
        for worker in self._workers:
            self._tasks.append(
                asyncio.create_task(self._supervise(worker), name=f"dns-worker-{worker.index}")
            )
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                for worker in self._workers:
                    await worker.ready.wait()
        except BaseException:
            await self.stop()
            raise
        log.info("%d DNS workers serving %s", self._count, ", ".join(map(_format, self._addresses)))

    async def _supervise(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY
        while self._running():
            started = loop.time()
            try:
                code = await self._run(worker)
            except OSError as exc:
                code = None
                log.error("DNS worker %d could not start: %s", worker.index, exc)
            if not self._running():
                return
            log.warning(
                "DNS worker %d (pid %s) exited with status %s; starting it again",
                worker.index, worker.pid, code,
            )  # fmt: skip
            self.restarts += 1
            delay = RESTART_DELAY if loop.time() - started > STABLE_AFTER else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)

    def _running(self) -> bool:
        return not self._stopping

    async def _sockets(self) -> tuple[list[Pair], bool]:
        """The listeners for a worker starting, and whether they are its own (to be
        closed here once passed on)."""
        if not self._reuseport:
            return self._shared, False
        if self._spare:
            pairs, self._spare = self._spare, []
            return pairs, True
        return [await _bind(host, port, True) for host, port in self._addresses], True

    async def _run(self, worker: _Worker) -> int | None:
        """Start ``worker`` and serve its channel until the process exits."""
        pairs, own = await self._sockets()
        ours, theirs = socket.socketpair()
        try:
            fds = [theirs.fileno(), *(s.fileno() for pair in pairs for s in pair)]
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "broker.dnsserver.worker", str(theirs.fileno()),
                pass_fds=fds, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            if own:
                _close(pairs)
        worker.process, worker.pid = process, process.pid
        reader, writer = await asyncio.open_connection(sock=ours)
        config = {
            **self._options,
            "t": "config",
            "zones": [z.settings.model_dump(mode="json") for z in self._zones.zones()],
            "sockets": [[fds[1 + 2 * i], fds[2 + 2 * i]] for i in range(len(pairs))],
            "snapshot": [nodes_message(z, z.owner_keys()) for z in self._zones.zones()],
        }
        write_message(writer, config)
        worker.writer = writer
        listening = asyncio.create_task(self._listen(worker, reader, writer))
        try:
            return await process.wait()
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            writer.close()
            self._retire(worker)

    async def _listen(
        self, worker: _Worker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (message := await read_message(reader)) is not None:
            kind = message.get("t")
            if kind == "signed" and self._signed is not None:
                self._signed.dispatch(
                    bytes.fromhex(message["data"]),
                    str(message["source"]),
                    _answer_to(writer, int(message["id"])),
                    udp=bool(message["udp"]),
                )
            elif kind == "counts":
                worker.answers = {(t, r): int(n) for t, r, n in message["answers"]}
                worker.limited = {k: int(v) for k, v in message["limited"].items()}
            elif kind == "ready":
                host, port = message["probe"]
                worker.probe = (str(host), int(port))
                worker.ready.set()
                log.info(
                    "DNS worker %d ready: pid %d, also answering on %s port %d (its probe)",
                    worker.index, worker.pid, host, port,
                )  # fmt: skip

    def _retire(self, worker: _Worker) -> None:
        for key, count in worker.answers.items():
            self._retired_answers[key] = self._retired_answers.get(key, 0) + count
        for reason, withheld in worker.limited.items():
            self._retired_limited[reason] = self._retired_limited.get(reason, 0) + withheld
        worker.answers, worker.limited = {}, {}
        worker.writer, worker.probe, worker.process = None, None, None
        worker.ready.clear()

    def _changed(self, zone: EmbeddedZone, key: str) -> None:
        if not self._dirty:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:
                self._dirty.setdefault(zone, set()).add(key)
                self._flush()
                return
        self._dirty.setdefault(zone, set()).add(key)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        messages = [nodes_message(zone, keys) for zone, keys in dirty.items()]
        for worker in self._workers:
            if worker.writer is not None:
                for message in messages:
                    write_message(worker.writer, message)

    def query_counts(self) -> dict[tuple[str, str], int]:
        counts = dict(self._retired_answers)
        for worker in self._workers:
            for key, count in worker.answers.items():
                counts[key] = counts.get(key, 0) + count
        return counts

    def rate_limited_counts(self) -> dict[str, int]:
        counts = {"dropped": 0, "slipped": 0, **self._retired_limited}
        for worker in self._workers:
            for reason, withheld in worker.limited.items():
                counts[reason] = counts.get(reason, 0) + withheld
        return counts

    def probes(self) -> list[tuple[int, int | None, tuple[str, int] | None]]:
        """Each worker's index, pid and probe address (None while it is not ready)."""
        return [(w.index, w.pid if w.probe is not None else None, w.probe) for w in self._workers]

    @property
    def count(self) -> int:
        return self._count

    async def stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            for worker in self._workers:
                if worker.process is not None and worker.process.returncode is None:
                    log.warning("DNS worker %d did not stop; killing it", worker.index)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            log.info("DNS workers stopped")
        if self._signed is not None:
            await self._signed.close()
        _close(self._shared + self._spare)
        self._shared, self._spare = [], []
        self._addresses = []


def _answer_to(writer: asyncio.StreamWriter, request: int) -> Any:
    def reply(response: bytes | None) -> None:
        data = None if response is None else response.hex()
        write_message(writer, {"t": "answer", "id": request, "data": data})

    return reply


def _close(pairs: list[Pair]) -> None:
    for pair in pairs:
        for sock in pair:
            sock.close()


async def _bind_first(host: str, port: int, reuseport: bool) -> Pair:
    """The first pair, on a port free for UDP and TCP alike when ``port`` is 0. With
    ``reuseport``, that port is found without SO_REUSEPORT first: one chosen with it
    could be a port another process of the same user serves with SO_REUSEPORT."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            if reuseport and port == 0:
                return await _bind(host, await _free_port(host), reuseport)
            return await _bind(host, port, reuseport)
        except OSError:
            if port != 0 or attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _free_port(host: str) -> int:
    addresses = await asyncio.get_running_loop().getaddrinfo(
        host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = addresses[0]
    with socket.socket(family, socket.SOCK_DGRAM) as udp, socket.socket(family) as tcp:
        udp.bind(address)
        port = int(udp.getsockname()[1])
        tcp.bind((address[0], port, *address[2:]))
        return port


async def _bind(host: str, port: int, reuseport: bool) -> Pair:
    """A UDP socket and a listening TCP socket on ``host`` ``port`` (0: any); with
    ``reuseport``, both with SO_REUSEPORT so that every worker can bind its own."""
    addresses = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = addresses[0]
    udp = _listener(family, socket.SOCK_DGRAM, reuseport)
    try:
        udp.bind(address)
        bound = (address[0], udp.getsockname()[1], *address[2:])
        tcp = _listener(family, socket.SOCK_STREAM, reuseport)
        try:
            tcp.bind(bound)
            tcp.listen(TCP_BACKLOG)
        except BaseException:
            tcp.close()
            raise
    except BaseException:
        udp.close()
        raise
    return udp, tcp


def _listener(family: int, kind: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _address(sock: socket.socket) -> tuple[str, int]:
    address = sock.getsockname()
    return str(address[0]), int(address[1])


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
