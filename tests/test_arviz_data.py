"""ArviZ conversion and convergence warnings under the installed arviz (0.2x or ≥ 1).

The checks live in ``tests/arviz_checks.py`` so that they also run without torch, e.g. in a
Python 3.12 environment with arviz 1.x: ``python tests/arviz_checks.py``.
"""

import subprocess
import sys
from pathlib import Path

import arviz_checks
import pytest


@pytest.mark.parametrize("check", arviz_checks.CHECKS, ids=lambda c: c.__name__)
def test_arviz_check(check):
    check()


def test_arviz_modules_run_without_torch():
    """The script loads the two modules from their files and asserts torch never loads."""
    script = Path(__file__).with_name("arviz_checks.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout and "all passed" in result.stdout
