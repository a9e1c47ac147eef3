"""What the broker and its DNS worker processes tell each other over a socketpair: one
JSON object per frame, after its 4-byte length.

The broker sends a worker its ``config`` (with a snapshot of every embedded zone),
then ``nodes`` whenever names change (their whole content and the zone's SOA serial,
so a worker mirrors the broker's zones exactly and a message applied twice does no
harm), and ``answer`` for each message it handled for the worker. A worker sends
``ready``, ``signed`` (an UPDATE or TSIG-signed message for the broker to handle) and
``counts`` (its answers by transport and rcode, every second).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from providers.embedded import EmbeddedZone, NodeState

Message = dict[str, Any]

_LENGTH = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None once the other end is gone."""
    try:
        (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if size > MAX_FRAME:
            raise ValueError(f"a worker channel frame of {size} bytes is over {MAX_FRAME}")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None  # the other end closed, or died with our messages unread
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a worker channel frame is not a JSON object")
    return message


def write_message(writer: asyncio.StreamWriter, message: Message) -> None:
    if writer.is_closing():
        return
    body = json.dumps(message, separators=(",", ":")).encode()
    writer.write(_LENGTH.pack(len(body)) + body)


def nodes_message(zone: EmbeddedZone, keys: Iterable[str]) -> Message:
    """The content of ``keys`` in ``zone`` and its serial."""
    nodes = {}
    for key in keys:
        state = zone.node_state(key)
        static = {str(rdtype): [ttl, texts] for rdtype, (ttl, texts) in state.static.items()}
        nodes[key] = [static, state.txt, state.txt_ttl, state.reserved]
    return {"t": "nodes", "zone": zone.settings.name, "serial": zone.serial, "nodes": nodes}


def apply_nodes(zones: Mapping[str, EmbeddedZone], message: Message) -> None:
    zone = zones.get(message["zone"])
    if zone is None:
        return
    for key, (static, txt, txt_ttl, reserved) in message["nodes"].items():
        state = NodeState(
            {int(rdtype): (int(ttl), list(texts)) for rdtype, (ttl, texts) in static.items()},
            list(txt),
            int(txt_ttl),
            bool(reserved),
        )
        zone.load_node_state(key, state)
    zone.set_serial(int(message["serial"]))
