"""A processor that holds one partition at a gate before it reads anything, so a test can stop the
XRootD server exactly while that partition reads (tests/test_xrootd.py)."""

import socket
import time
from pathlib import Path

from muon import MuonPt


class Gated(MuonPt):
    """MuonPt whose first partition to start after *after* others finished is held: it writes
    ``gate/started`` (its dataset and first entry) and waits, before reading any branch, until
    ``gate/go`` exists (at most *wait* seconds). Each finished partition leaves
    ``gate/done-<dataset>-<entrystart>``. The held partition's output says whether the server on *port*
    refused connections when it went on (``server_down_at_go``): its reads then met the outage."""

    def __init__(self, gate, port, after=3, wait=120.0):
        super().__init__()
        self.gate, self.port, self.after, self.wait = gate, port, after, wait

    def process(self, events):
        gate = Path(self.gate)
        meta = events.metadata
        held = {}
        if not (gate / "started").exists() and len(list(gate.glob("done-*"))) >= self.after:
            (gate / "started").write_text(f"{meta['dataset']} {meta['entrystart']}")
            deadline = time.monotonic() + self.wait
            while not (gate / "go").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {gate / 'go'} after {self.wait} s")
                time.sleep(0.02)
            held = {"held": 1, "server_down_at_go": int(self._refused())}
        output = {**super().process(events), **held}
        (gate / f"done-{meta['dataset']}-{meta['entrystart']}").touch()
        return output

    def _refused(self):
        try:
            socket.create_connection(("localhost", self.port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False
