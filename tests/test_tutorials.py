"""The tutorial notebooks: committed without outputs, and each runs end to end.

Execution runs every notebook with nbclient (kernel ``python3``) in a temporary copy of the
``tutorials`` folder, so nothing is written into the repository. Together the notebooks take
several minutes on two CPU cores, hence the ``slow`` marker (run with ``pytest -m slow``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_tutorials_exist():
    names = {p.name for p in NOTEBOOKS}
    for expected in ("01_quickstart.ipynb", "02_md_training_and_scandal.ipynb",
                     "04_lorenz_attractor.ipynb", "05_your_own_simulator.ipynb",
                     "06_simulating_on_a_cluster.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{path.name}: cell {index} has outputs; clear them."
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {index} has an execution count; clear outputs."
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path, tmp_path: Path):
    nbclient = pytest.importorskip("nbclient")
    workdir = tmp_path / "tutorials"
    shutil.copytree(TUTORIALS, workdir)
    notebook = nbformat.read(workdir / path.name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
