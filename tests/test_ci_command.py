"""`.ci/run` runs exactly the README's test command (the second line of its first block),
and the script that command starts exists and is executable."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    test_command = block.splitlines()[1]
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
    script = ROOT / test_command.split(" ", 1)[0]
    assert script.is_file() and os.access(script, os.X_OK), script
