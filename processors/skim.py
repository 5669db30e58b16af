"""Derived dataset for training the jet-parton assignment: one row per permutation of 4j2b events.

The selection is the ttbar analysis's (``ttbar.py``: exactly one lepton, at least four jets, at least two
b-tagged jets). For each selected event, every candidate assignment of its leading jets to the roles
(W1, W2, b_had, b_lep) that the analysis scores (``ttbar.permutation_features``: the b-tag-consistent
ones) is one row with the features the model sees (``ttbar.FEATURES``), the truth label (1 when the
assignment matches the jets' ``truthRole``), the event number and the permutation index. The rows are
written per partition as Parquet through a :class:`distproc.columns.ColumnWriter`; ``distproc run``
writes them to ``OUTPUT/assignment/`` with ``manifest.json``::

    distproc run processors/skim.yaml --output demo-output/skim
    python processors/train_assignment.py demo-output/skim/assignment --out demo-output/model
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np
from ttbar import (
    FEATURES,
    JET_FIELDS,
    MAX_JETS,
    permutation_features,
    region_masks,
    select_jets,
    select_lepton,
    truth_labels,
)

import distproc
from distproc.columns import ColumnWriter


class AssignmentSkim(distproc.Processor):
    """Write the permutations of the 4j2b events of *datasets* as training rows.

    Parameters
    ----------
    datasets
        Datasets to skim (others are skipped without reading).
    max_jets
        Leading jets whose permutations are written (must match the analysis's ``max_jets``).
    name
        Name of the column output (and of its directory under the run's output directory).
    directory
        Where to write; ``None`` lets ``distproc run --output DIR`` choose ``DIR/<name>``.
    """

    def __init__(
        self,
        datasets: Sequence[str] = ("ttbar",),
        max_jets: int = MAX_JETS,
        name: str = "assignment",
        directory: str | None = None,
    ) -> None:
        self.datasets = tuple(datasets)
        self.max_jets = int(max_jets)
        self.writer = ColumnWriter(name, directory)

    def process(self, events: Any) -> dict[str, Any]:
        """Select, build the permutations, write them; return the files and a small cutflow."""
        meta = events.metadata
        dataset = meta["dataset"]
        if dataset not in self.datasets:
            return {}
        one, lepton = select_lepton(events)
        selected = events[one]
        jets = select_jets(selected.Jet, (*JET_FIELDS, "truthRole"))
        mask = region_masks(jets)["4j2b"]
        jets = jets[mask]
        features, event, perm = permutation_features(
            jets, {k: v[mask] for k, v in lepton.items()}, self.max_jets
        )
        label = truth_labels(jets, event, perm, self.max_jets)
        table = {name: features[:, i] for i, name in enumerate(FEATURES)}
        table["label"] = label
        table["event"] = ak.to_numpy(selected.event[mask]).astype(np.int64)[event]
        table["permutation"] = perm.astype(np.int16)
        matched = np.zeros(int(mask.sum()), dtype=bool)
        matched[event[label == 1]] = True
        cutflow = {"events": len(events), "4j2b": int(mask.sum()), "4j2b_matched": int(matched.sum())}
        return {self.writer.name: self.writer.write(table, meta), "cutflow": {dataset: cutflow}}
