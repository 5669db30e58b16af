"""The processor the service tests run (loaded with ``distproc.load_processor``, so pickled by value:
batch workers need not import anything from tests/)."""

from __future__ import annotations

import os
import time

import awkward as ak
import hist

import distproc


class MuonPt(distproc.Processor):
    """Muon pT per dataset, events per dataset, and where each partition ran.

    ``sleep`` seconds per partition make runs slow enough to disturb them while they run.
    """

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep

    def process(self, events):
        from distributed import get_worker

        time.sleep(self.sleep)
        dataset = events.metadata["dataset"]
        h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(40, 0, 200, name="pt").Double()
        h.fill(dataset=dataset, pt=ak.flatten(events.Muon.pt))
        return {
            "muon_pt": h,
            "events": {dataset: len(events)},
            "partitions": {dataset: 1},
            "workers": {get_worker().address: 1},
            "malloc_trim_threshold": {os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"): 1},
        }
