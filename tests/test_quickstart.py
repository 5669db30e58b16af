"""The README's Quick start, pasted into a plain script without ``if __name__ == "__main__":``, runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import distproc

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    """The first Python block of the README's "Quick start (Python)" section, as written."""
    text = README.read_text()
    section = text[text.index("## Quick start (Python)") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.cluster
def test_readme_quick_start_runs_as_a_script_without_main_guard(tmp_path, nano_tt):
    """Spawned workers start a fresh interpreter; they must not run the user's script again (which
    would start a cluster in every worker and hang)."""
    code = quickstart_code()
    assert "__main__" not in code
    assert '"samples/ttbar/*.root"' in code
    (tmp_path / "quickstart.py").write_text(code.replace('"samples/ttbar/*.root"', repr(str(nano_tt))))
    ran = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DISTPROC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "bootstrapping phase" not in ran.stderr
    saved = distproc.load(tmp_path / "out")
    with uproot.open(nano_tt) as file:
        tree = file["Events"]
        jets = tree.arrays(["Jet_pt", "Jet_eta", "genWeight"])
    assert saved.output["events"] == tree.num_entries
    good = (jets.Jet_pt > 30) & (abs(jets.Jet_eta) < 2.4)
    ht = ak.to_numpy(ak.sum(jets.Jet_pt[good], axis=1))
    weights = ak.to_numpy(jets.genWeight)
    expected, _ = np.histogram(ht, bins=25, range=(50, 550), weights=weights)
    got = saved.output["ht"][{"dataset": "ttbar"}].values()
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # float32 jet pT summed in float64 either way
