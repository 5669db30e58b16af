"""Cost of building one partition's NanoEvents: distproc's cached schema against coffea's ``from_root``.

For each real sample in ``../shared/data`` (CMS NanoAOD with 650 and 1500 branches, ATLAS PHYSLITE) and a
generated NanoAOD-like file, the same open file and entry range are turned into virtual-mode NanoEvents
``--repeat`` times by ``distproc.reading.partition_events`` (schema built once per file and cached) and by
``coffea.nanoevents.NanoEventsFactory.from_root`` (schema rebuilt from every branch each time),
interleaved, with a garbage collection before each (the event graphs of real files are large enough that
collector pauses otherwise dominate the spread). Nothing is read from the branches: this is the fixed
cost every partition pays before ``process`` runs.

    python benchmarks/nanoevents.py [--repeat 10]

The last line reads ``nanoevents from_root/cached=X.XX`` for the 1500-branch CMS file (or the largest
sample present).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import uproot
from coffea.nanoevents import NanoEventsFactory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_ms, load_line, real_and_generated_samples

from distproc.reading import partition_events, schema_class


def measure(path: str, tree: str, schema: str, repeat: int) -> tuple[float, float, int]:
    """Median CPU ms per partition (cached, from_root) and the number of branches."""
    file = uproot.open(path)
    stop = min(file[tree].num_entries, 100_000)
    cached, plain = [], []
    for _ in range(repeat):
        cached.append(cpu_ms(lambda: partition_events(path, tree, 0, stop, schema=schema, file=file)))
        plain.append(
            cpu_ms(
                lambda: NanoEventsFactory.from_root(
                    file,
                    treepath=tree,
                    entry_start=0,
                    entry_stop=stop,
                    schemaclass=schema_class(schema),
                    mode="virtual",
                ).events()
            )
        )
    return statistics.median(cached), statistics.median(plain), len(file[tree].keys())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=10, help="partitions built per method (default 10)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the real files' dropped cross-references and odd branches
    samples = real_and_generated_samples()
    print(f"NanoEvents of one partition (<= 100k entries), median CPU of {args.repeat}; {load_line()}")
    ratio = 0.0
    for path, tree, schema in samples:
        cached, plain, branches = measure(path, tree, schema, args.repeat)
        ratio = plain / cached
        print(
            f"{Path(path).name:24s} {schema:8s} {branches:5d} branches: cached {cached:7.1f} ms, "
            f"from_root {plain:7.1f} ms, ratio {ratio:5.2f}"
        )
    print(f"nanoevents from_root/cached={ratio:.2f}")


if __name__ == "__main__":
    main()
