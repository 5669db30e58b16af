"""``distproc run | make-sample``: each command parses its options and calls the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from distproc.exceptions import DistprocError

__all__ = ("main",)


def _fail(err: Exception) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distproc")
def main() -> None:
    """Run Coffea-style processors over ROOT files on any Dask cluster."""


def _describe_axis(axis: Any) -> str:
    if "Category" in type(axis).__name__:
        return f"{axis.name}={{{', '.join(map(str, axis))}}}"
    return f"{axis.name}[{len(axis)}]"


def print_summary(result: Any, output_dir: Path) -> None:
    """Print the per-dataset table, histogram names and failures of a finished run."""
    from rich.console import Console
    from rich.table import Table

    from distproc.io import iter_hists

    report = result.report
    console = Console()
    table = Table(title=f"distproc run: {report.events:,} events in {report.wall_seconds:.1f} s")
    for column in ("dataset", "events", "partitions", "failed", "MB read", "events/s"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, ds in report.datasets.items():
        rate = ds.events / report.wall_seconds if report.wall_seconds else 0.0
        table.add_row(
            name,
            f"{ds.events:,}",
            str(ds.partitions + ds.partitions_failed),
            str(ds.partitions_failed),
            f"{ds.bytes_read / 1e6:.1f}",
            f"{rate:,.0f}",
        )
    table.add_row(
        "total",
        f"{report.events:,}",
        str(report.partitions),
        str(len(report.failures)),
        "",
        f"{report.events_per_second:,.0f}",
        style="bold",
    )
    console.print(table)
    hists = list(iter_hists(result.output))
    if hists:
        console.print("histograms:")
        for name, h in hists:
            axes = ", ".join(_describe_axis(ax) for ax in h.axes)
            console.print(f"  {name}: {axes}")
    for failure in report.failures:
        console.print(f"[red]FAILED[/red] {failure.describe()}")
    for skipped in report.skipped_files:
        console.print(f"[red]SKIPPED[/red] {skipped}")
    state = "[red]PARTIAL[/red] " if result.partial else ""
    console.print(f"{state}outputs written to {output_dir}/ (histograms.root, output.pkl, report.json)")


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option("--scheduler", help="Address of a running Dask scheduler (tcp://… or tls://…).")
@click.option("--workers", type=click.IntRange(min=1), help="Workers of the local cluster.")
@click.option("--chunksize", type=int, help="Events per partition.")
@click.option("--max-chunks", type=int, help="At most this many partitions per dataset.")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal).")
def run_command(
    config: Path,
    output: Path | None,
    scheduler: str | None,
    workers: int | None,
    chunksize: int | None,
    max_chunks: int | None,
    progress: bool | None,
) -> None:
    """Run the processor, fileset and cluster named in CONFIG (YAML) and write the outputs.

    Exit status: 0 on success, 1 when some partitions failed (the partial output is still written and
    marked partial in report.json), 2 on a configuration or input error.
    """
    from distproc.config import load_config
    from distproc.engine import run
    from distproc.io import save
    from distproc.processor import load_processor

    try:
        cfg = load_config(config)
        out_dir = output or (cfg.base_dir / cfg.output if cfg.output else None)
        if out_dir is None:
            msg = "give --output DIR (or 'output:' in the config)"
            raise click.UsageError(msg)
        processor = load_processor(cfg.processor, cfg.processor_args, base_dir=cfg.base_dir)
        overrides = {"chunksize": chunksize, "max_chunks": max_chunks, "progress": progress}
        options = {**cfg.options, **{k: v for k, v in overrides.items() if v is not None}}
        result = run(
            processor,
            cfg.fileset,
            cluster=scheduler or cfg.cluster,
            workers=workers,
            base_dir=str(cfg.base_dir),
            **options,
        )
        save(result, out_dir)
    except DistprocError as err:
        _fail(err)
    print_summary(result, out_dir)
    sys.exit(1 if result.partial else 0)


@main.command("make-sample")
@click.option("--process", "process", required=True, help="Process to generate (ttbar, wjets, ...).")
@click.option("--events", type=int, required=True, help="Number of events.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compression", type=click.Choice(["zstd", "lz4"]), default="zstd", show_default=True)
@click.option("--events-per-file", type=int, default=None, help="Split into files of this many events.")
def make_sample_command(
    process: str, events: int, out: Path, seed: int, compression: str, events_per_file: int | None
) -> None:
    """Write a synthetic NanoAOD-like sample (ROOT TTrees named Events) to OUT."""
    from distproc.samples import make_sample

    try:
        info = make_sample(
            process, events, out, seed=seed, compression=compression, events_per_file=events_per_file
        )
    except DistprocError as err:
        _fail(err)
    click.echo(f"wrote {info.events:,} {process} events to {len(info.files)} file(s) in {out}")
