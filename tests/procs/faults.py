"""A processor that kills its worker on one partition (engine failure tests, tests/test_faults.py)."""

import os
import signal
import time
from pathlib import Path

import numpy as np
from muon import MuonPt


class Faulty(MuonPt):
    """MuonPt that, on the first partition of dataset ``bad``, allocates *hog_bytes* (``fault="memory"``)
    or segfaults (``fault="segfault"``); every partition first leaves a marker file in *markers* (named
    by the process id) and sleeps *pause* seconds, so a test can kill the worker running it."""

    def __init__(self, fault=None, markers=None, pause=0.0, hog_bytes=0):
        super().__init__()
        self.fault, self.markers, self.pause, self.hog_bytes = fault, markers, pause, hog_bytes

    def process(self, events):
        meta = events.metadata
        if self.markers:
            name = f"{os.getpid()}-{meta['dataset']}-{meta['entrystart']}-{time.time_ns()}"
            Path(self.markers, name).touch()
        time.sleep(self.pause)
        if meta["dataset"] == "bad" and meta["entrystart"] == 0:
            if self.fault == "memory":
                hog = np.ones(self.hog_bytes // 8)
                time.sleep(10)  # held until the memory limit kills the process
                del hog
            elif self.fault == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
        return super().process(events)
