"""Smoke run of bench/fuzz_client_api.py: schemathesis against a live `atrium run`.

Only the spec's own examples (one per operation), so it stays quick and
deterministic; the full fuzz (coverage and fuzzing phases) is run by hand,
see docs/client-api.md. Skipped when the OpenAPI definitions are not there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fuzz_client_api.py"
SPEC = ROOT.parent / "shared" / "spec" / "client-server-openapi.json"


@pytest.mark.slow
@pytest.mark.skipif(not SPEC.exists(), reason=f"no OpenAPI definitions at {SPEC}")
def test_schemathesis_examples_get_no_server_error():
    """Every implemented operation, fed the spec's examples, answers below 500
    and the server log has no error or traceback."""
    pytest.importorskip("schemathesis")
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--spec",
            str(SPEC),
            "--phases",
            "examples",
            "--max-examples",
            "1",
            "--workers",
            "1",
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
    # Atrium routes most of the client-server API: a collapse of this number
    # means the probing of implemented operations broke, not that all is well.
    assert summary["operations"] >= 70, summary
    assert summary["test_cases"] >= summary["operations"], summary
    assert summary["server_errors_5xx"] == 0 and summary["log_errors"] == 0, summary
