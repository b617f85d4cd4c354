"""Each notebook run top to bottom in a fresh kernel, as Colab runs it (nbclient), at its small budget:
`make test-notebooks`. The executed copies (with their pictures) are kept under NOTEBOOK_OUT if set."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_runs_top_to_bottom_with_pictures_inline(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path))  # the kernel inherits it
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 3, f"{path.name}: {len(pictures)} pictures"
    if os.environ.get("NOTEBOOK_OUT"):
        out = pathlib.Path(os.environ["NOTEBOOK_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out / path.name)
