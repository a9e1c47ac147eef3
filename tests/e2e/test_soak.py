"""The short soak CI runs: bench/soak/soak.py for 15 s with provider faults on (the
embedded zone and Route53 from moto): nothing lost, nothing orphaned, every failure a
retryable one, and the injected faults really ridden out by retries."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.support import ROOT

SOAK = ROOT / "bench" / "soak" / "soak.py"


async def test_a_short_soak_with_faults_loses_nothing():
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SOAK), "--seconds", "15", "--rate", "60", "--dns-rate", "100",
        "--lanes", "32", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert (result["lost"], result["orphaned"], result["provider_store_differ"]) == (0, 0, 0)
    assert result["unfinished"] == 0
    for operation in ("present", "cleanup", "dns query"):
        assert result["served"].get(operation, 0) > 0, operation
    assert not [kind for kind in result["errors"] if "(retryable)" not in kind], result["errors"]
    assert sum(result["provider_retries"].values()) > 0
    assert {key.split()[0] for key in result["provider_retries"]} == {"embedded", "aws"}
