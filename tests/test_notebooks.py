"""Every notebook in notebooks/ runs top to bottom (tiny models, CPU) and shows what it is there to show."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECT = {"qwen3_vl_tour.ipynb": ["same tokens: True", "zoo.explain", "decode[b=1]",
                                  "same tokens as the reference: True", "from the cache", "lm_head"],
          "mla_explorer.ipynb": ["relative difference absorbed vs naive", "padding rows are zero: True"],
          "passes_walkthrough.ipynb": ["compiled == reference", "zoo.attention", "zoo.norm_rope_pair"]}


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} == set(EXPECT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    for expected in EXPECT[path.name]:
        assert expected in text, (path.name, expected)
    assert "IProgress not found" not in text  # ipywidgets installed: progress bars render
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= (1 if "passes" in path.name else 2)
