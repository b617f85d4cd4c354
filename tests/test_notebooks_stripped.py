"""The notebooks are kept in git without outputs (`make test-notebooks` runs them)."""

import json

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == ["dalle1_quickstart", "dalle3_recaptioning", "unclip", "your_own_data"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_outputs_are_stripped_and_the_first_cell_sets_up(path):
    cells = json.loads(path.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), path.name
    assert "pip" in "".join(code[0]["source"]) and "jax.devices()" in "".join(code[0]["source"])
