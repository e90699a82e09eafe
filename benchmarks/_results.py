"""Benchmark results as JSON under ``benchmarks/results/``, with the commit and the machine."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version

__all__ = ["RESULTS", "describe_machine", "git_commit", "is_older", "load_result", "machine",
           "machines_of", "markdown_table", "short_machine", "write_result"]

RESULTS = Path(__file__).resolve().parent / "results"


def _checked_out_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


#: Read when the benchmarks are imported: the code a long run executes, even if commits
#: land while it runs.
_COMMIT_AT_START = _checked_out_commit()


def git_commit() -> str:
    """The commit checked out when this process imported the benchmarks, with "+dirty" when
    the work tree had changes."""
    return _COMMIT_AT_START


def machine(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, load, torch threads, and the GPU if one was used."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        info["load_average"] = os.getloadavg()
        model = [line.split(":", 1)[1].strip() for line in
                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu_model"] = model[0] if model else None
    except OSError:
        pass
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus commit and time) to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"commit": git_commit(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def load_result(name: str) -> dict[str, Any] | None:
    """``benchmarks/results/<name>.json`` as a dict, or None when that run is not committed."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def describe_machine(record: dict[str, Any]) -> str:
    """One line for a result's machine: the GPU if one ran it, else the CPU model, cores and
    torch threads (reads the key names of every writer this folder has had)."""
    info = record.get("machine") or record.get("settings", {}).get("machine", {})
    if info.get("gpu"):
        return str(info["gpu"])
    if not info:
        return "machine not recorded"
    cpu = info.get("cpu_model") or info.get("cpu") or info.get("processor") or "CPU"
    cores = info.get("cpu_count") or info.get("cores")
    threads = info.get("torch_threads") or info.get("threads")
    return ", ".join([cpu] + ([f"{cores} cores"] if cores else [])
                     + ([f"{threads} torch thread(s)"] if threads else []))


def short_machine(record: dict[str, Any]) -> str:
    """The GPU or processor of a result's machine, without the core and thread counts (a
    table's column; :func:`describe_machine` gives the whole line); "–" when not recorded."""
    if not (record.get("machine") or record.get("settings", {}).get("machine")):
        return "–"
    name = describe_machine(record).split(",")[0]
    for noise in ("(R)", "(TM)", " Processor", " CPU"):
        name = name.replace(noise, "")
    return name


def machines_of(records: list[dict[str, Any]]) -> str:
    """The distinct :func:`short_machine` of ``records``, comma-separated."""
    return ", ".join(sorted({short_machine(r) for r in records}))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def is_older(version: str | None, since: str | None) -> bool:
    """Whether a result of sbi-mflow ``version`` predates ``since``, the version of the last
    change to what it measures (CHANGELOG.md); an unrecorded version counts as older. No
    ``since``: nothing is older."""
    if since is None:
        return False
    try:
        return Version(str(version)) < Version(since)
    except InvalidVersion:
        return True
