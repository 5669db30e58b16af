"""A processor reading a derived dataset (Parquet, ROOT or RNTuple) back as events."""

import awkward as ak

import distproc


class FieldSum(distproc.Processor):
    """Rows, the sum of one field and the set of one key field per dataset."""

    def __init__(self, field: str, key: str | None = None) -> None:
        self.field = field
        self.key = key

    def process(self, events):
        dataset = events.metadata["dataset"]
        out = {"rows": {dataset: len(events)}, "sum": {dataset: float(ak.sum(events[self.field]))}}
        if self.key is not None:
            out["keys"] = {dataset: set(ak.to_list(events[self.key]))}
        return out
