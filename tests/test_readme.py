"""The README's Quick start runs as written, with only its budgets made smaller.

The fenced ``python`` block under "## Quick start" is extracted and executed. Each budget
substitution must match exactly once, so a README edit that this test no longer covers
fails here instead of rotting silently.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"

# (text in the README, smaller budget used here)
BUDGETS = [
    ("simulator.prior.sample((4000,))", "simulator.prior.sample((300,))"),
    (".append_simulations(theta, x).train()",
     ".append_simulations(theta, x).train(max_num_epochs=2)"),
    ("max_num_epochs=40", "max_num_epochs=2"),
    ("build_posterior(num_chains=4)", "build_posterior(num_chains=4, warmup_steps=30, thin=1)"),
    ("posterior.sample((1000,), x=x_o)", "posterior.sample((40,), x=x_o)"),
    ("posterior.sample_arviz(1000, x=x_o)", "posterior.sample_arviz(40, x=x_o)"),
    ("simulator.prior.sample((200,))", "simulator.prior.sample((8,))"),
    ("posterior, num_posterior_samples=1000)", "posterior, num_posterior_samples=20)"),
    ("dap, num_posterior_samples=1000)", "dap, num_posterior_samples=20)"),
]


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README has no ```python block under '## Quick start'"
    return match.group(1)


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    code = quick_start_code()
    for original, smaller in BUDGETS:
        assert code.count(original) == 1, f"README Quick start no longer contains {original!r}"
        code = code.replace(original, smaller)
    monkeypatch.chdir(tmp_path)  # sbi writes tensorboard logs into the working directory
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny budgets: convergence warnings are expected
        exec(compile(code, str(README), "exec"), namespace)
    samples, idata = namespace["samples"], namespace["idata"]
    assert samples.shape == (40, 1) and torch.isfinite(samples).all()
    assert namespace["simulator"].prior.support.check(samples).all()
    assert idata.posterior["theta"].shape[:2] == (4, 10)
    assert namespace["ranks"].shape == (8, 1) and namespace["dap"].shape == (8, 1)


def test_readme_gives_exactly_the_two_setup_commands():
    text = README.read_text()
    block = text.split("## Set-up: two commands", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (README.parent / script).is_file()
