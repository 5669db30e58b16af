"""Cost of counting a file's entries in preprocessing: the head of the tree's record against the whole tree.

For a generated NanoAOD-like file and each real sample in ``../shared/data`` (CMS NanoAOD with 650 and
1500 branches, ATLAS PHYSLITE), ``--repeat`` times, interleaved: ``distproc.reading.count_entries``
(opens the file and reads ``fEntries`` from the head of the tree's record) against what it did before,
``uproot.open(path)[tree].num_entries`` (which deserialises every branch of the tree). Both open the
file afresh each time, as a preprocessing task does. The counts are asserted equal.

    python benchmarks/preprocessing.py [--repeat 10]

The last line reads ``preprocessing full/header=X.XX`` for the 1500-branch CMS file (or the last sample
present).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import uproot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_ms, load_line, real_and_generated_samples

from distproc.reading import count_entries


def full_count(path: str, tree: str) -> int:
    with uproot.open(path) as file:
        return int(file[tree].num_entries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=10, help="counts per method (default 10)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"entry count of one file, median CPU of {args.repeat}; {load_line()}")
    ratio = 0.0
    for path, tree, _ in real_and_generated_samples():
        assert count_entries(path, tree) == full_count(path, tree), path
        header, full = [], []
        for _ in range(args.repeat):
            header.append(cpu_ms(lambda: count_entries(path, tree)))  # noqa: B023  (called at once)
            full.append(cpu_ms(lambda: full_count(path, tree)))  # noqa: B023
        ratio = statistics.median(full) / statistics.median(header)
        print(
            f"{Path(path).name:24s} header {statistics.median(header):7.2f} ms, whole tree "
            f"{statistics.median(full):7.1f} ms, ratio {ratio:6.1f}"
        )
    print(f"preprocessing full/header={ratio:.2f}")


if __name__ == "__main__":
    main()
