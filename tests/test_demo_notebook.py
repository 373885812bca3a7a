"""examples/demo.ipynb: committed without outputs, and runs green in a real Jupyter kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "demo.ipynb"


def test_notebook_is_valid_and_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 5
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.slow
def test_notebook_runs_in_a_real_kernel(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "TMPDIR": str(tmp_path)}  # the evaluation's temporary folder lands in tmp_path
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    # Any cell error raises CellExecutionError, failing the test.
    client.execute(env=env)

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    # The detections figure, pr_curves.png and the hand-drawn curve.
    assert len(pictures) >= 3
    assert f"repository {REPO}" in text  # the kernel found this checkout
    assert "VOC 2007 test: 6 images, VOC07 11-point AP" in text and "Mean AP" in text
    first = sorted((REPO / "data/samples/voc_mini/VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[0]
    assert f"{first.name}: " in text and "mAP " in text
    # The evaluation wrote its files into the temporary folder, not into the repository.
    written = list(tmp_path.glob("ssd-demo-eval-*/pr_curves.png"))
    assert len(written) == 1 and (written[0].parent / "results.json").is_file()
