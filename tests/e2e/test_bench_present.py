"""The present benchmark still runs end to end (its quick mode: one round of 2 s): it
starts the bare reference and a real broker, drives both with wrk, paces the broker at
half its rate, and prints one well-formed table with no failed request. Figures are not
asserted: they belong in BENCHMARKS.md, measured on a quiet machine."""

from __future__ import annotations

import asyncio
import re
import sys

from tests.support import ROOT, require_binary

BENCH = ROOT / "bench" / "present" / "bench.py"
ROW = re.compile(
    r"^\| (?P<label>[^|]+) \| (?P<rate>[\d,]+) \| (?P<ratio>[\d.]+) \| (?P<cpu>\d+) \| "
    r"[\d.]+ ms \| (?P<half>[^|]+) \| (?P<latency>[^|]+) \| (?P<errors>\d+) \|$"
)


async def test_the_present_benchmark_prints_its_table():
    require_binary("wrk")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH), "--quick", "--connections", "16",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    rows = {m["label"]: m for line in out.decode().splitlines() if (m := ROW.match(line))}
    assert set(rows) == {"bare aiohttp", "floor: bare + token hash + SQLite write", "broker"}, (
        out.decode()
    )
    assert rows["bare aiohttp"]["ratio"] == "1.00"
    broker = rows["broker"]
    assert int(broker["rate"].replace(",", "")) > 0
    assert broker["errors"] == "0"  # every present and cleanup answered 200/201
    assert re.fullmatch(r"[\d,]+", broker["half"]), broker["half"]
    assert re.fullmatch(r"[\d.]+ ms / [\d.]+ ms", broker["latency"]), broker["latency"]
