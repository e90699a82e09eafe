"""docs/benchmarks.md is what ``python -m benchmarks.report`` writes from the committed JSON,
so every number in it traces to a benchmark run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_document_is_generated_from_the_results():
    run = subprocess.run([sys.executable, "-m", "benchmarks.report", "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
