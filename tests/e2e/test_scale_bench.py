"""bench/scale/bench.py in its quick mode: it starts a broker, fills records, holds waits
in flight, releases them, times start-ups, stops by itself and prints one well-formed
table. No timing is asserted: the figures belong in BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.support import ROOT

BENCH = ROOT / "bench" / "scale" / "bench.py"
HEADER = ["records", "waiters", "RSS", "MiB", "CPU", "%", "lag", "q/s"]


@pytest.mark.timeout(180)
async def test_the_quick_scale_bench_completes_with_a_well_formed_table():
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH), "--quick", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 170)
    assert process.returncode == 0, err.decode()[-3000:]
    lines = out.decode().strip().splitlines()
    result = json.loads(lines[-1])
    header = next(index for index, line in enumerate(lines) if line.split()[:8] == HEADER)
    table = lines[header + 1 : header + 1 + len(result["rows"])]
    assert [(r["records"], r["waiters"]) for r in result["rows"]] == [(0, 0), (200, 0), (200, 20)]
    for line, row in zip(table, result["rows"], strict=True):
        cells = line.split()
        assert len(cells) == 13, line
        assert [int(cells[0]), int(cells[1])] == [row["records"], row["waiters"]]
        assert all(float(cell) >= 0 for cell in cells)
        assert row["rss"] > 0
    assert any(line.startswith("per live record:") for line in lines)
    assert any(line.startswith("per waiting client:") for line in lines)
    assert any(line.startswith("start to ready:") for line in lines)
    assert len(result["starts"]["empty"]) == len(result["starts"]["full"]) == 1
