"""Running the command line as a user would: ``python -m distproc.cli ...`` in a directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``distproc ARGS`` in *cwd* (wide console, extra environment *env*); never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "distproc.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **env},
    )
