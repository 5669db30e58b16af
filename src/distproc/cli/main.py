"""``distproc run | make-sample | fit``: each command parses its options and calls the library."""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from distproc.exceptions import DistprocError
from distproc.io import is_category

__all__ = ("main",)

#: The console summary lists at most this many counters (numbers of the output: counts, cutflows).
_MAX_COUNTERS = 40


#: ``distproc run``'s exit status: complete, partial (outputs written), bad input, stopped (resumable).
EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_STOPPED = 0, 1, 2, 3


def _fail(err: Exception) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(EXIT_INPUT)


def _stop(message: str, checkpoint: Path | None) -> None:
    """Exit with :data:`EXIT_STOPPED` saying how to resume."""
    if checkpoint is not None:
        message += (
            f"; finished partitions are in the checkpoint {checkpoint}: rerun the same command to resume"
        )
    click.echo(f"stopped: {message}", err=True)
    sys.exit(EXIT_STOPPED)


def _check_writable(directory: Path) -> None:
    """Fail now, not after the run, when *directory* cannot be created or written."""
    from distproc.exceptions import ConfigError

    probe = directory / f".distproc-probe-{uuid.uuid4().hex[:12]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        msg = f"output directory {directory} cannot be written: {err.strerror or err}"
        raise ConfigError(msg, key="output") from None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distproc")
def main() -> None:
    """Run Coffea-style processors over ROOT files on any Dask cluster."""


def _describe_axis(axis: Any) -> str:
    if is_category(axis):
        values = list(map(str, axis))
        shown = ", ".join(values[:4]) + (f", ... ({len(values)} values)" if len(values) > 5 else "")
        return f"{axis.name}={{{shown if len(values) > 5 else ', '.join(values)}}}"
    return f"{axis.name}[{len(axis)}]"


def print_summary(result: Any, output_dir: Path) -> None:
    """Print the per-dataset table, histograms, counters and cutflows, column outputs and failures of a
    finished run."""
    from rich.console import Console
    from rich.table import Table

    from distproc.columns import MANIFEST_NAME, iter_column_files
    from distproc.engine.failures import describe_failures
    from distproc.io import iter_counters, iter_hists

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
    counters = list(iter_counters(result.output))
    if counters:
        console.print("counters:")
        for name, value in counters[:_MAX_COUNTERS]:
            shown = f"{value:,}" if isinstance(value, int) else f"{value:.6g}"
            console.print(f"  {name}: {shown}", highlight=False)
        if len(counters) > _MAX_COUNTERS:
            console.print(f"  ... and {len(counters) - _MAX_COUNTERS} more (in output.pkl)")
    columns = list(iter_column_files(result.output))
    if columns:
        console.print("columns:")
        for key, files in columns:
            kind = "ROOT" if files.format == "root" else "Parquet"
            manifest = Path(files.directory) / MANIFEST_NAME
            console.print(f"  {key}: {files.rows:,} rows in {len(files.paths())} {kind} file(s), {manifest}")
    for line in describe_failures(report.failures, report.stopped_early):
        console.print(f"[red]FAILED[/red] {line}", soft_wrap=True, highlight=False)
    for skipped in report.skipped_files:
        console.print(f"[red]SKIPPED[/red] {skipped}")
    for conflict in report.output_conflicts:
        console.print(f"[red]NOT ADDED[/red] {conflict}")
    if report.failures:
        console.print(f"details: {output_dir / 'report.json'} (each failure's traceback)", highlight=False)
    state = "[red]PARTIAL[/red] " if result.partial else ""
    console.print(f"{state}outputs written to {output_dir}/ (histograms.root, output.pkl, report.json)")


@main.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option(
    "--processor",
    "processor_spec",
    metavar="FILE:CLASS",
    help="The processor: path/to/file.py:Class or package.module:Class (instead of the config's).",
)
@click.option(
    "--fileset",
    "fileset",
    metavar="FILE",
    help="A YAML/JSON fileset file, or one .root/.parquet input file (instead of the config's).",
)
@click.option("--schema", help="NanoEvents schema: nanoaod, physlite or base (flat ntuples).")
@click.option("--treename", help="Tree read where the fileset names none (default Events).")
@click.option("--scheduler", help="Address of a running Dask scheduler (tcp://… or tls://…).")
@click.option("--workers", type=click.IntRange(min=1), help="Workers of the local cluster.")
@click.option("--chunksize", type=int, help="Events per partition.")
@click.option("--max-chunks", type=int, help="At most this many partitions per dataset.")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal).")
@click.option(
    "--mode",
    type=click.Choice(["partition", "dask"]),
    help="partition: process() gets each partition's events; dask: a coffea dask-awkward processor.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint directory (default OUTPUT/.checkpoint); a rerun resumes from it.",
)
@click.option("--no-checkpoint", is_flag=True, help="Keep no checkpoint.")
@click.option(
    "--verify-checksums/--no-verify-checksums",
    default=None,
    help="Check the checksum the fileset gives for a file (checksum: adler32:...) before trusting it.",
)
@click.option("--fresh", is_flag=True, help="Discard the checkpoint and process every partition.")
def run_command(
    config: Path | None,
    output: Path | None,
    processor_spec: str | None,
    fileset: str | None,
    schema: str | None,
    treename: str | None,
    scheduler: str | None,
    workers: int | None,
    chunksize: int | None,
    max_chunks: int | None,
    progress: bool | None,
    mode: str | None,
    checkpoint: Path | None,
    no_checkpoint: bool,
    verify_checksums: bool | None,
    fresh: bool,
) -> None:
    """Run the processor, fileset and cluster named in CONFIG (YAML) and write the outputs.

    Without CONFIG, --processor, --fileset and --output say what to run, e.g.
    `distproc run --processor analysis.py:Analysis --fileset dy.root --output out`. Flags override
    the config's values.

    Every finished partition is kept in a checkpoint: after an interruption, the same command processes
    only the partitions not in it.

    Exit status: 0 on success, 1 when some partitions failed (the partial output is still written and
    marked partial in report.json), 2 on a configuration or input error, 3 when the run stopped before
    writing its outputs (interrupted, scheduler lost, outputs not writable): rerun to resume.
    """
    from distproc.columns import bind_writers
    from distproc.config import load_config, run_config
    from distproc.engine import run
    from distproc.exceptions import RunInterrupted
    from distproc.io import save
    from distproc.processor import load_processor

    overrides = {
        "chunksize": chunksize,
        "max_chunks": max_chunks,
        "progress": progress,
        "schema": schema,
        "treename": treename,
        "mode": mode,
        "verify_checksums": verify_checksums,
    }
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a batch system's SIGTERM stops like Ctrl-C
    ckpt_dir = None
    try:
        if config is None:
            if processor_spec is None or fileset is None:
                msg = "give a CONFIG file, or --processor FILE:CLASS and --fileset FILE"
                raise click.UsageError(msg)
            cfg = run_config(processor_spec, fileset, **overrides)
        else:
            cfg = load_config(config)
            given = run_config(processor_spec or cfg.processor, fileset or cfg.fileset)  # against cwd
            if processor_spec is not None:
                cfg.processor, cfg.processor_base = processor_spec, given.processor_base
            if fileset is not None:
                cfg.fileset, cfg.fileset_dir = given.fileset, given.fileset_dir
        out_dir = output or (cfg.base_dir / cfg.output if cfg.output else None)
        if out_dir is None:
            msg = "give --output DIR (or 'output:' in the config)"
            raise click.UsageError(msg)
        _check_writable(out_dir)
        ckpt_dir = None if no_checkpoint else checkpoint or out_dir / ".checkpoint"
        processor = load_processor(cfg.processor, cfg.processor_args, base_dir=cfg.processor_base)
        bind_writers(processor, out_dir)  # column outputs without a directory go to OUTPUT/<name>
        options = {**cfg.options, **{k: v for k, v in overrides.items() if v is not None}}
        result = run(
            processor,
            cfg.fileset,
            cluster=scheduler or cfg.cluster,
            workers=workers,
            base_dir=str(cfg.fileset_dir),
            checkpoint=ckpt_dir,
            fresh=fresh,
            allow_failures=True,  # the partial output is written, and the exit status says so
            **options,
        )
    except DistprocError as err:
        if isinstance(err, RunInterrupted):
            _stop(str(err), None)
        _fail(err)
    except KeyboardInterrupt as err:
        _stop(f"interrupted ({err or 'SIGINT'}) before the run finished", ckpt_dir)
    try:
        save(result, out_dir)  # with the column outputs' manifests
    except OSError as err:
        _stop(
            f"the outputs could not be written to {out_dir} ({err}); the previous outputs are unchanged",
            ckpt_dir,
        )
    print_summary(result, out_dir)
    sys.exit(EXIT_PARTIAL if result.partial else EXIT_OK)


@main.command("status")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint directory (default OUTPUT_DIR/.checkpoint).",
)
def status_command(output_dir: Path, checkpoint: Path | None) -> None:
    """Show how many partitions of the run writing OUTPUT_DIR are done and how many are left."""
    from distproc.engine.checkpoint import checkpoint_status

    path = checkpoint or output_dir / ".checkpoint"
    try:
        done, planned = checkpoint_status(path)
    except DistprocError as err:
        _fail(err)
    click.echo(f"{done} of {planned} partitions done, {planned - done} left (checkpoint {path})")


@main.command("make-sample")
@click.option(
    "--process",
    "process",
    required=True,
    help="Process to generate (ttbar, wjets, ...), or 'agc' for the AGC's nine inputs and a fileset.yaml.",
)
@click.option("--events", type=int, required=True, help="Number of events (per process with 'agc').")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compression", type=click.Choice(["zstd", "lz4"]), default="zstd", show_default=True)
@click.option("--events-per-file", type=int, default=None, help="Split into files of this many events.")
def make_sample_command(
    process: str, events: int, out: Path, seed: int, compression: str, events_per_file: int | None
) -> None:
    """Write a synthetic NanoAOD-like sample (ROOT TTrees named Events) to OUT.

    With --process agc, write the nine inputs of the AGC ttbar analysis and OUT/fileset.yaml, the
    fileset (with cross sections and sums of weights) that processors/agc.yaml and skim.yaml read.
    """
    from distproc.samples import make_agc_samples, make_sample

    options = {"seed": seed, "compression": compression, "events_per_file": events_per_file}
    try:
        if process == "agc":
            infos = make_agc_samples(events, out, **options)
            total = sum(info.events for info in infos.values())
            click.echo(f"wrote {total:,} events of {len(infos)} AGC processes and {out / 'fileset.yaml'}")
            return
        info = make_sample(process, events, out, **options)
    except DistprocError as err:
        _fail(err)
    click.echo(f"wrote {info.events:,} {process} events to {len(info.files)} file(s) in {out}")


@main.command("fit")
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Fit configuration YAML.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Where to write (default OUTPUT_DIR)."
)
@click.option("--plots/--no-plots", default=None, help="Write the PNG plots (default: the config's 'plots').")
def fit_command(output_dir: Path, config: Path, out: Path | None, plots: bool | None) -> None:
    """Fit OUTPUT_DIR/histograms.root (a `distproc run` output) as CONFIG describes.

    Writes workspace.json, fit.json, fit.log (Minuit's, pyhf's and cabinetry's output) and the pre-/post-fit
    and pull plots into OUTPUT_DIR (or --out) and prints the fitted parameter of interest. Exit status 2 on a
    configuration or input error, 3 when the fit did not converge (fit.json then says "valid": false).
    """
    from distproc.fit import fit

    try:
        summary = fit(output_dir, config, out=out, plots=plots)
    except DistprocError as err:
        _fail(err)
    destination = out or output_dir
    if not summary.valid:
        reason = summary.minimizer["reason"]
        click.echo(f"error: the fit did not converge ({reason}); see {destination / 'fit.log'}", err=True)
        sys.exit(3)
    empty = sum("has empty bins" in note for note in summary.notes)
    if empty:
        click.echo(f"note: {empty} template(s) have empty bins (cabinetry); see 'notes' in fit.json")
    click.echo(f"fit of {summary.data} in {destination}: workspace.json, fit.json, fit.log", nl=False)
    n_plots = len(summary.files) - 3
    click.echo(f" and {n_plots} plot(s)" if n_plots else "")
    if summary.minimizer["covariance"] != "accurate":
        covariance = summary.minimizer["covariance"]
        condition = summary.minimizer.get("condition", float("nan"))
        click.echo(f"warning: the covariance is {covariance} (condition {condition:.2g}); see fit.json")
    click.echo(f"{summary.poi} = {summary.value:.3f} +- {summary.uncertainty:.3f}")
