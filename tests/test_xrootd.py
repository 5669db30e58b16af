"""Remote input over XRootD: a real ``xrootd`` server on localhost (``xrootd_server`` fixture), a server
that is down, a file the server does not have, and an outage that ends while distproc retries."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from services.services import free_port

import distproc
from distproc.reading import count_entries

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
        _run(client, fileset, tmp_path)
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert url in message
    assert "could not be read after 3 retries" in message

    # Skipping bad files: the run goes on, and the file is reported, not silently dropped.
    result = _run(client, fileset, tmp_path, skip_bad_files=True)
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
