"""Processors for the column-output tests (loaded with distproc.load_processor, so pickled by value)."""

import awkward as ak

import distproc
from distproc.columns import ColumnWriter


class MetSkim(distproc.Processor):
    """One row per event with MET > met_min: event number, MET and the jets' pT (a jagged column).

    ``fail_dataset`` makes the first partition of that dataset raise, ``when="before"`` or ``"after"``
    the file is written; ``when="during"`` gives the writer a column Arrow cannot store.
    """

    def __init__(self, directory=None, met_min=40.0, fail_dataset=None, when="before"):
        self.writer = ColumnWriter("met", directory)
        self.met_min = met_min
        self.fail_dataset = fail_dataset
        self.when = when

    def process(self, events):
        meta = events.metadata
        failing = meta["dataset"] == self.fail_dataset and meta["entrystart"] == 0
        if failing and self.when == "before":
            raise ValueError("deliberate failure before writing")
        selected = events[events.MET.pt > self.met_min]
        table = {"event": selected.event, "met": selected.MET.pt, "jet_pt": selected.Jet.pt}
        if failing and self.when == "during":
            table["bad"] = ak.Array([{"x": 1} if i % 2 else 2 for i in range(len(selected))])
        files = self.writer.write(table, meta)
        if failing and self.when == "after":
            raise ValueError("deliberate failure after writing")
        return {"met": files, "selected": {meta["dataset"]: len(selected)}}
