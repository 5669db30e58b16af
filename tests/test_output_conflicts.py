"""Outputs that cannot be added name the output key and the partitions involved; everything else is
still added, returned and saved (default mode, real LocalCluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

import distproc

PROCS = Path(__file__).parent / "procs" / "conflicts.py"
pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("what", "key", "reason"),
    [
        ("axes", "output['h']", "Hist + Hist"),
        ("shapes", "output['counts']", "arrays of shapes"),
        ("type", "output['nested']['thing']", "Opaque + Opaque"),
    ],
)
def test_unaddable_output_is_named_and_the_rest_is_kept(
    client, nano_dy, nano_tt, tmp_path, what, key, reason
):
    proc = distproc.load_processor(f"{PROCS}:Conflicting", {"what": what})
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    result = distproc.run(
        proc, fileset, cluster=client, chunksize=50, progress=False, cache_dir=str(tmp_path / "cache")
    )
    assert result.partial
    assert result.output["events"] == 240  # everything else is still added
    assert result.output["muons"] > 0
    (conflict,) = result.report.output_conflicts
    assert conflict.startswith(f"{key} cannot be added")
    assert reason in conflict
    assert "nano_dy.root" in conflict
    assert "nano_tt_v12.root" in conflict
    saved = distproc.load(distproc.save(result, tmp_path / "out"))
    assert saved.output["events"] == 240
    assert saved.report.output_conflicts == result.report.output_conflicts
