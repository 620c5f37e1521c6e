"""The Spark walkthrough notebook runs top to bottom (its code cells, in one fresh Python process)."""

import json
import subprocess
import sys

import pytest

from helpers import REPO

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow
NOTEBOOK = REPO / "notebooks" / "spark_walkthrough.ipynb"


def test_walkthrough_notebook_runs(tmp_path):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / "notebook.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "embedded 21, failed 1" in res.stdout
    assert "1 0." in res.stdout and "skimage_coffee.png" in res.stdout.split("\n1 ")[1].splitlines()[0]
    cos = float(res.stdout.split("min cosine local vs Spark:")[1].split()[0])
    assert cos >= 0.999
