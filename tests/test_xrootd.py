"""Remote input over XRootD: a real ``xrootd`` server on localhost (``xrootd_server`` fixture), a server
that is down, a file the server does not have or may not serve, a corrupt file, an outage that ends while
distproc retries (at the open, and mid-run while a partition reads), and one that does not end."""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
from procs.muon import muon_hist
from services.services import free_port

import distproc
from distproc.reading import count_entries, partition_events
from distproc.remote import is_transient

HERE = Path(__file__).resolve().parent
PROCESSOR = f"{HERE / 'services' / 'muon_processor.py'}:MuonPt"


@pytest.fixture(scope="module")
def client():
    """One local worker shared by this module's runs."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c


def _run(client: Any, fileset: dict[str, list[str]], tmp_path: Path, **options: Any) -> Any:
    processor = distproc.load_processor(PROCESSOR)
    return distproc.run(
        processor, fileset, cluster=client, chunksize=50, progress=False, cache_dir=str(tmp_path), **options
    )


@pytest.mark.xrootd
def test_xrootd_input_equals_local_files(
    xrootd_server: Any, client: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path
) -> None:
    remote = {"dy": [xrootd_server.url(nano_dy.name)], "tt": [xrootd_server.url(nano_tt.name)]}
    assert remote["dy"][0].startswith(f"root://localhost:{xrootd_server.port}//")
    got = _run(client, remote, tmp_path / "remote")
    want = _run(client, {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}, tmp_path / "local")
    assert not got.report.failures
    assert not got.partial
    assert got.output["events"] == want.output["events"] == {"dy": 40, "tt": 200}
    assert got.output["partitions"] == want.output["partitions"]
    np.testing.assert_array_equal(
        got.output["muon_pt"].values(flow=True), want.output["muon_pt"].values(flow=True)
    )
    assert all(d.bytes_read > 0 for d in got.report.datasets.values())


@pytest.mark.cluster
def test_server_down_names_the_url_after_bounded_retries(client: Any, nano_dy: Path, tmp_path: Path) -> None:
    url = f"root://localhost:{free_port()}//data/nano_dy.root"
    fileset = {"dy": [str(nano_dy)], "remote": [url]}
    start = time.monotonic()
    with pytest.raises(distproc.FilesetError) as info:
        _run(client, fileset, tmp_path, retries=2)
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert url in message
    assert "could not be read after 2 retries" in message

    # Skipping bad files: the run goes on, and the file is reported, not silently dropped.
    result = _run(client, fileset, tmp_path, skip_bad_files=True, retries=2)
    assert result.partial
    assert any(url in skipped for skipped in result.report.skipped_files)
    assert result.output["events"] == {"dy": 40}


@pytest.mark.xrootd
def test_file_missing_on_the_server_fails_at_once(xrootd_server: Any, tmp_path: Path) -> None:
    url = xrootd_server.url("no_such_file.root")
    start = time.monotonic()
    with pytest.raises(distproc.ReadError, match="no such file") as info:
        count_entries(url, "Events", "missing", retries=3)
    assert time.monotonic() - start < 1.5  # not retried: retrying cannot make it appear
    assert info.value.file == url


@pytest.mark.xrootd
def test_outage_ending_during_retries_is_survived(
    xrootd_server: Any, client: Any, nano_dy: Path, tmp_path: Path
) -> None:
    """The server is down when the run starts and back 1 s later: the retries with back-off (0.5 s, 1 s,
    2 s) reconnect, on the client (preprocessing) and on the worker alike."""
    url = xrootd_server.url(nano_dy.name)
    xrootd_server.stop()
    restart = threading.Timer(1.0, xrootd_server.start)
    restart.start()
    try:
        start = time.monotonic()
        assert count_entries(url, "Events", "dy", retries=3) == 40
        assert 0.9 < time.monotonic() - start < 10
    finally:
        restart.join()

    xrootd_server.stop()
    restart = threading.Timer(1.0, xrootd_server.start)
    restart.start()
    try:
        result = _run(client, {"dy": [url]}, tmp_path)
    finally:
        restart.join()
    assert not result.report.failures
    assert result.output["events"] == {"dy": 40}


def _http_status(status: int) -> Exception:
    import aiohttp

    return aiohttp.ClientResponseError(None, (), status=status, message="from the server")


def _xrootd(message: str) -> OSError:
    """An error as fsspec-xrootd raises it: the client's status message in an OSError."""
    return OSError(f"File did not vector_read properly: {message}")


@pytest.mark.parametrize(
    ("make_error", "transient"),
    [
        (lambda: ConnectionRefusedError(111, "Connection refused"), True),
        (lambda: ConnectionResetError(104, "Connection reset by peer"), True),
        (lambda: TimeoutError("timed out"), True),
        (lambda: _xrootd("[ERROR] Socket error"), True),
        (lambda: _xrootd("[ERROR] Operation expired"), True),
        (lambda: _xrootd("[FATAL] Connection error"), True),
        (lambda: ValueError("I/O operation on closed file"), True),  # a dead fsspec-xrootd handle
        (lambda: _http_status(503), True),
        (lambda: __import__("aiohttp").ServerDisconnectedError(), True),
        (lambda: FileNotFoundError(2, "No such file or directory"), False),
        (lambda: PermissionError(13, "Permission denied"), False),
        (lambda: _xrootd("[ERROR] Server responded with an error: [3011] No such file or directory"), False),
        (
            lambda: _xrootd(
                "[ERROR] Server responded with an error: [3010] Unable to open; permission denied"
            ),
            False,
        ),
        (lambda: _http_status(403), False),
        (lambda: ValueError("unrecognized compression algorithm: b'XX'"), False),  # corrupt data
        (lambda: distproc.ReadError("could not be read after 5 retries", file="root://h//f.root"), False),
    ],
)
def test_transient_errors_are_told_from_permanent_ones(make_error: Any, transient: bool) -> None:
    assert is_transient(make_error()) is transient


# --- an outage mid-run: reads of open files are retried, not only opens -------------------------------

GATED = f"{HERE / 'procs' / 'gated.py'}:Gated"
REFERENCE = f"{HERE / 'procs' / 'muon.py'}:MuonPt"
CHUNKSIZE = 20  # 40 dy and 200 tt events: 12 partitions of 20 entries


def _served(xrootd_server: Any, nano_dy: Path, nano_tt: Path) -> dict[str, list[str]]:
    return {"dy": [xrootd_server.url(nano_dy.name)], "tt": [xrootd_server.url(nano_tt.name)]}


def _run_gated(
    client: Any, server: Any, fileset: dict[str, list[str]], tmp_path: Path, *, restart: bool, **options: Any
) -> tuple[Any, str]:
    """Run :class:`Gated` over *fileset*; when its held partition waits, stop *server*, let the partition
    read, and (with *restart*) start the server again 5 s later on the same port. Returns the result and
    the held partition (``"dataset entrystart"``)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    processor = distproc.load_processor(GATED, {"gate": str(gate), "port": server.port})

    def disturb() -> None:
        deadline = time.monotonic() + 300
        while not (gate / "started").exists():
            if time.monotonic() > deadline:
                pytest.fail("the gated partition never started")
            time.sleep(0.02)
        server.stop()
        (gate / "go").touch()  # the held partition reads now, while the server is down
        if restart:
            time.sleep(5)
            server.start()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outage = pool.submit(disturb)
        try:
            result = distproc.run(
                processor,
                fileset,
                cluster=client,
                chunksize=CHUNKSIZE,
                progress=False,
                cache_dir=str(tmp_path / "cache"),
                **options,
            )
        finally:
            outage.result()
    return result, (gate / "started").read_text()


@pytest.mark.xrootd
def test_server_outage_mid_run_gives_the_fault_free_result(
    xrootd_server: Any, client: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path
) -> None:
    """The server stops for 5 s while a partition reads its branches (lazily, inside ``process()``),
    after 3 partitions finished and with the files open on the worker: with the default ``retries``
    the run equals a fault-free one bin for bin."""
    fileset = _served(xrootd_server, nano_dy, nano_tt)
    want = distproc.run(
        distproc.load_processor(REFERENCE),
        fileset,
        cluster=client,
        chunksize=CHUNKSIZE,
        progress=False,
        cache_dir=str(tmp_path / "ref"),
    )
    got, held = _run_gated(client, xrootd_server, fileset, tmp_path, restart=True)

    assert got.output["held"] == 1
    assert got.output["server_down_at_go"] == 1  # the held partition's reads met the outage
    assert not got.report.failures
    assert not got.partial
    assert got.report.partitions == want.report.partitions == 12
    assert got.output["events"] == want.output["events"] == 240
    np.testing.assert_array_equal(
        got.output["muon_pt"].values(flow=True), want.output["muon_pt"].values(flow=True)
    )
    np.testing.assert_array_equal(
        got.output["muon_pt"].variances(flow=True), want.output["muon_pt"].variances(flow=True)
    )
    assert held.split()[0] in {"dy", "tt"}


def _muon_hist(path: Path, dataset: str, ranges: list[tuple[int, int]]) -> Any:
    """The reference processor's histogram over entry *ranges* of *path*, by plain uproot reading."""

    arrays = uproot.open(path)["Events"].arrays(["Muon_pt", "genWeight"])
    h = muon_hist()
    for start, stop in ranges:
        pt = arrays.Muon_pt[start:stop]
        weight = ak.broadcast_arrays(arrays.genWeight[start:stop], pt)[0]
        h.fill(dataset=dataset, pt=ak.flatten(pt), weight=ak.flatten(weight))
    return h


@pytest.mark.xrootd
def test_server_gone_for_good_fails_the_rest_and_keeps_what_was_done(
    xrootd_server: Any, client: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path
) -> None:
    """The server stops mid-run and stays down: the held partition fails after the bounded retries, and
    every later one in one attempt (the server's retries ran out in this run), each naming the file and
    the cause; the partitions done before are kept."""
    fileset = _served(xrootd_server, nano_dy, nano_tt)
    try:
        result, held = _run_gated(
            client, xrootd_server, fileset, tmp_path, restart=False, retries=1, allow_failures=True
        )
    finally:
        xrootd_server.start()

    assert result.partial
    failures = {(f.dataset, f.entry_start): f for f in result.report.failures}
    dataset, start = held.split()
    assert (dataset, int(start)) in failures
    retried = "ReadError: could not be read after 1 retry"
    once = f"not retried, as the retries of an earlier read from localhost:{xrootd_server.port} ran out"
    for failure in failures.values():
        assert failure.file == fileset[failure.dataset][0]
        assert failure.file in failure.exception
        assert (retried in failure.exception) != (once in failure.exception), failure.exception
        assert "Connection error" in failure.exception  # the XRootD client's own words
    assert retried in failures[dataset, int(start)].exception  # the first to meet the outage
    assert len(failures) > 1
    assert all(once in f.exception for key, f in failures.items() if key != (dataset, int(start)))
    done = {
        (name.split("-")[1], int(name.split("-")[2]))
        for name in (p.name for p in (tmp_path / "gate").iterdir())
        if name.startswith("done-")
    }
    assert len(done) >= 3
    assert not done & set(failures)  # done before the outage: kept

    entries = {"dy": 40, "tt": 200}
    kept = {
        ds: [(a, a + CHUNKSIZE) for a in range(0, n, CHUNKSIZE) if (ds, a) not in failures]
        for ds, n in entries.items()
    }
    assert result.output["events"] == sum(b - a for ranges in kept.values() for a, b in ranges)
    want = _muon_hist(nano_dy, "dy", kept["dy"]) + _muon_hist(nano_tt, "tt", kept["tt"])
    # the same weights summed in another order: equal to float64 rounding
    np.testing.assert_allclose(result.output["muon_pt"].values(flow=True), want.values(flow=True), rtol=1e-12)


# --- reads of an open file, in this process: lazy and eager; permanent errors are not retried -----------


def _retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "distproc.remote" and "retry" in r.getMessage()
    ]


@pytest.mark.xrootd
def test_lazy_and_eager_reads_survive_an_outage(
    xrootd_server: Any, nano_tt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NanoEvents partition of an open remote file: its lazy branch reads, then an eager read of the
    same file, each meet a stopped server that is back 2 s later, and give what the local file gives."""

    caplog.set_level(logging.WARNING, logger="distproc.remote")
    url = xrootd_server.url(nano_tt.name)
    events, file = partition_events(url, "Events", 50, 150, metadata={"dataset": "tt"})
    local, local_file = partition_events(str(nano_tt), "Events", 50, 150, metadata={"dataset": "tt"})
    try:
        for read, want in (
            (lambda: events.Jet.pt, local.Jet.pt),
            (lambda: file["Events"]["Electron_pt"].array(), local_file["Events"]["Electron_pt"].array()),
        ):
            caplog.clear()
            xrootd_server.stop()
            restart = threading.Timer(2.0, xrootd_server.start)
            restart.start()
            try:
                got = read()
            finally:
                restart.join()
            assert ak.to_list(got) == ak.to_list(want)
            retries = _retries_logged(caplog)
            assert retries, "the read did not meet the outage"
            assert all(url in message for message in retries)
    finally:
        file.close()
        local_file.close()


@pytest.mark.xrootd
def test_file_the_server_may_not_read_fails_at_once(
    xrootd_server: Any, nano_dy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distproc.remote")
    forbidden = xrootd_server.data / "forbidden.root"
    shutil.copy(nano_dy, forbidden)
    forbidden.chmod(0o000)  # the server runs as the xrootd user
    url = xrootd_server.url(forbidden.name)
    try:
        with pytest.raises(distproc.ReadError, match="not found or not readable") as info:
            count_entries(url, "Events", "forbidden", retries=3)
    finally:
        forbidden.unlink()
    assert info.value.file == url
    assert "[3010]" in str(info.value)  # XRootD's "not authorized"
    assert not _retries_logged(caplog)


@pytest.mark.xrootd
def test_corrupt_basket_is_not_retried(
    xrootd_server: Any, nano_dy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A basket whose compression header is damaged fails in decompression, after its bytes arrived:
    retrying cannot repair it, so it fails at once with uproot's error naming the file."""

    caplog.set_level(logging.WARNING, logger="distproc.remote")
    corrupt = xrootd_server.data / "corrupt.root"
    shutil.copy(nano_dy, corrupt)
    corrupt.chmod(0o644)
    branch = uproot.open(corrupt)["Events"]["Muon_pt"]
    header = int(branch.member("fBasketSeek")[0]) + branch.basket(0).member("fKeylen")
    with corrupt.open("r+b") as f:
        f.seek(header)
        f.write(b"XX")  # was b"ZL": the basket's compression algorithm
    url = xrootd_server.url(corrupt.name)
    try:
        events, file = partition_events(url, "Events", 0, 40, metadata={"dataset": "dy"})
        with file, pytest.raises(ValueError, match="unrecognized compression algorithm") as info:
            ak.to_list(events.Muon.pt)  # materialise the lazy branch
    finally:
        corrupt.unlink()
    assert not isinstance(info.value, distproc.ReadError)
    assert url in str(info.value)
    assert not _retries_logged(caplog)


@pytest.mark.xrootd
def test_checkpoint_on_xrootd_resumes_only_what_failed(
    xrootd_server: Any, client: Any, nano_dy: Path, nano_tt: Path, tmp_path: Path
) -> None:
    """A checkpoint at a ``root://`` URL (issue 14, item 1): entries written by the workers, moved into
    place by the server, listed and read back by the rerun, which processes only the failed partition."""
    import fsspec

    from distproc.engine.checkpoint import checkpoint_status

    marker = tmp_path / "fail"
    marker.touch()
    proc = distproc.load_processor(
        f"{HERE / 'procs' / 'muon.py'}:MuonPtFailingWhile", {"marker": str(marker)}
    )
    fileset = {"dy": [str(nano_dy)], "tt": [str(nano_tt)]}
    url = xrootd_server.scratch_url(f"ckpt-{tmp_path.name}")

    def run() -> Any:
        return distproc.run(
            proc,
            fileset,
            cluster=client,
            chunksize=10,
            checkpoint=url,
            allow_failures=True,
            progress=False,
            cache_dir=str(tmp_path),
        )

    first = run()
    assert [(f.dataset, f.entry_start) for f in first.report.failures] == [("dy", 0)]
    planned = first.report.partitions
    assert checkpoint_status(url) == (planned - 1, planned)
    marker.unlink()
    second = run()
    assert not second.report.failures
    assert second.report.resumed_partitions == planned - 1
    assert checkpoint_status(url) == (planned, planned)
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(f"{root}/entries")
    assert len(fs.ls(f"{root}/entries", detail=False)) == 1  # one entry for the whole run, no temporaries
    want = distproc.run(proc, fileset, cluster=client, chunksize=10, progress=False, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(second.output["muon_pt"].values(), want.output["muon_pt"].values())
    np.testing.assert_array_equal(second.output["muon_pt"].variances(), want.output["muon_pt"].variances())
    assert second.output["events"] == want.output["events"] == 240
