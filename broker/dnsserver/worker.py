"""One DNS worker process (``dns.workers`` > 1): the fast path on its own event loop.

Started by broker.dnsserver.workers with a socketpair to the broker (its file
descriptor is the only argument) and the listening sockets (shared with the other
workers, or its own SO_REUSEPORT ones). It serves a mirror of the broker's embedded
zones, kept in step by ``nodes`` messages, hands UPDATEs and TSIG-signed messages to the
broker, and also answers on a loopback port of its own so that the broker can probe
each worker. It stops on SIGTERM and when the
broker's end of the socketpair closes (the broker died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

import dns.rcode

from broker import logs
from broker.dnsserver.channel import Message, apply_nodes, read_message, write_message
from broker.dnsserver.ratelimit import RateLimit
from broker.dnsserver.server import DnsServer
from broker.dnsserver.updates import Reply
from broker.dnsserver.wire import header_only
from providers.embedded import EmbeddedZone, EmbeddedZoneSettings, ZoneSet

log = logging.getLogger("broker.dnsserver.worker")  # run as __main__

PROBE_ADDRESS = ("127.0.0.1", 0)
COUNTS_INTERVAL = 1.0


class ForwardingDispatcher:
    """Hands messages the fast path does not answer to the broker, which answers them."""

    def __init__(self, writer: asyncio.StreamWriter, limit: int) -> None:
        self._writer = writer
        self._limit = limit
        self._pending: dict[int, Reply] = {}
        self._next = 0

    def dispatch(self, data: bytes, source: str, reply: Reply, *, udp: bool = False) -> None:
        if len(self._pending) >= self._limit:
            reply(header_only(data, dns.rcode.REFUSED))
            return
        self._next += 1
        self._pending[self._next] = reply
        write_message(
            self._writer,
            {"t": "signed", "id": self._next, "data": data.hex(), "source": source, "udp": udp},
        )

    def answered(self, message: Message) -> None:
        reply = self._pending.pop(int(message["id"]), None)
        if reply is not None and message["data"] is not None:
            reply(bytes.fromhex(message["data"]))

    async def close(self) -> None:
        self._pending.clear()


async def serve(channel_fd: int) -> None:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd))
    config = await read_message(reader)
    if config is None or config.get("t") != "config":
        raise SystemExit("DNS worker: no configuration from the broker")
    logs.configure(*config["log"])
    zones = {
        settings["name"]: EmbeddedZone(EmbeddedZoneSettings.model_validate(settings))
        for settings in config["zones"]
    }
    for message in config["snapshot"]:
        apply_nodes(zones, message)
    forward = ForwardingDispatcher(writer, config["max_in_flight"]) if config["update"] else None
    limit = config["rate_limit"]
    server = DnsServer(
        ZoneSet(zones.values()),
        [PROBE_ADDRESS],
        max_udp_payload=config["max_udp_payload"],
        tcp_idle_timeout=config["tcp_idle_timeout"],
        apex_zones=[EmbeddedZone(EmbeddedZoneSettings(name=name)) for name in config["apex"]],
        rate_limit=None if limit is None else RateLimit(**limit),
        forward=forward,
    )
    sockets = [(socket.socket(fileno=u), socket.socket(fileno=t)) for u, t in config["sockets"]]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await server.start()
    try:
        await server.adopt(sockets)
        write_message(writer, {"t": "ready", "pid": os.getpid(), "probe": server.addresses[0]})
        async with asyncio.TaskGroup() as group:
            listening = group.create_task(_listen(reader, zones, forward, stop))
            counting = group.create_task(_report_counts(writer, server))
            await stop.wait()
            listening.cancel()
            counting.cancel()
    finally:
        _send_counts(writer, server)
        await server.stop()
        writer.close()


async def _listen(
    reader: asyncio.StreamReader,
    zones: dict[str, EmbeddedZone],
    forward: ForwardingDispatcher | None,
    stop: asyncio.Event,
) -> None:
    while (message := await read_message(reader)) is not None:
        kind = message.get("t")
        if kind == "nodes":
            apply_nodes(zones, message)
        elif kind == "answer" and forward is not None:
            forward.answered(message)
    log.info("DNS worker %d: the broker closed the channel; stopping", os.getpid())
    stop.set()


async def _report_counts(writer: asyncio.StreamWriter, server: DnsServer) -> None:
    while True:
        await asyncio.sleep(COUNTS_INTERVAL)
        _send_counts(writer, server)


def _send_counts(writer: asyncio.StreamWriter, server: DnsServer) -> None:
    counts: list[Any] = [[t, r, n] for (t, r), n in server.query_counts().items()]
    write_message(
        writer, {"t": "counts", "answers": counts, "limited": server.rate_limited_counts()}
    )


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the broker, which stops us
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
