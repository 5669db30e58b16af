"""Processors of tests/test_integrity.py (loaded with distproc.load_processor, so pickled by value)."""

import contextlib
import os

import awkward as ak

import distproc


class EventsPerFile(distproc.Processor):
    """Events per dataset and per file, and the sum of a flat branch (``total_of``) where given.

    With *replace* ``(new, target)``, the processor moves the file *new* over *target* when it is
    unpickled on a worker: after preprocessing recorded *target*, before any partition is read (each
    worker unpickles the run's processor once, before its first partition). The move happens once.
    """

    def __init__(self, replace: tuple[str, str] | None = None, total_of: str | None = None) -> None:
        self.replace = replace
        self.total_of = total_of

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.replace is not None:
            with contextlib.suppress(FileNotFoundError):  # another worker moved it already
                os.replace(*self.replace)

    def process(self, events):
        meta = events.metadata
        out = {
            "events": {meta["dataset"]: len(events)},
            "per_file": {os.path.basename(meta["filename"]): len(events)},
        }
        if self.total_of is not None:
            out["total"] = float(ak.sum(events[self.total_of]))
        return out
