"""Smoke run of bench/fuzz_federation_api.py: schemathesis against a live
`atrium run` with federation on, every request X-Matrix signed by a fuzzing
origin server whose key Atrium fetches from the origin's own key server.

The spec's examples plus a few generated cases per operation, once with a
good signature and once with a wrong one, so it stays quick; the full fuzz is
run by hand, see docs/federation.md. Skipped when the OpenAPI definitions are
not there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fuzz_federation_api.py"
SPEC = ROOT.parent / "shared" / "spec" / "server-server-openapi.json"


@pytest.mark.slow
@pytest.mark.skipif(not SPEC.exists(), reason=f"no OpenAPI definitions at {SPEC}")
def test_signed_federation_fuzz_gets_no_server_error():
    """Every implemented federation operation, signed by a real origin,
    answers below 500; with a wrong signature nothing authenticated succeeds;
    the server log has no error or traceback."""
    pytest.importorskip("schemathesis")
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--spec",
            str(SPEC),
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "3",
            "--seed",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    summary = json.loads(result.stdout)
    # Atrium serves 21 of the spec's federation and key operations: a collapse
    # means the probing broke, not that all is well.
    assert summary["operations"] >= 18, summary
    assert summary["test_cases"] >= summary["operations"], summary
    assert summary["server_errors_5xx"] == 0 and summary["log_errors"] == 0, summary
    # The origin's key was fetched from its key server, and its user is
    # still in the seeded room after the run.
    assert summary["origin_key_fetches"] >= 1, summary
    assert summary["origin_state_ids_status"] == 200, summary
    bad = summary["bad_signature"]
    assert bad["cases"] > 0 and bad["server_errors_5xx"] == 0 and bad["accepted"] == [], bad
    assert bad["statuses"].get("401", 0) >= summary["operations"], bad
