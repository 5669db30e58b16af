"""Tests of the synthetic NanoAOD-like sample generator (real ROOT files, small event counts)."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from distproc import samples
from distproc.exceptions import ConfigError
from distproc.samples import BRANCHES, PROCESSES, SampleInfo, load_samples, make_sample, sample_fileset

COLLECTIONS = {name: fields for name, fields in BRANCHES.items() if isinstance(fields, dict)}


def _read(info: SampleInfo) -> ak.Array:
    """All branches of all files of a sample, concatenated."""
    arrays = []
    for path in info.files:
        with uproot.open(path) as file:
            arrays.append(file[info.treename].arrays())
    return ak.concatenate(arrays)


@pytest.fixture(scope="module")
def ttbar(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return make_sample("ttbar", 3000, tmp_path_factory.mktemp("ttbar"), seed=7)


@pytest.fixture(scope="module")
def ttbar_arrays(ttbar: SampleInfo) -> ak.Array:
    return _read(ttbar)


def test_branch_names_and_types(ttbar: SampleInfo) -> None:
    expected = {}
    for name, spec in BRANCHES.items():
        if isinstance(spec, dict):
            expected[f"n{name}"] = np.dtype("int32")
            expected.update({f"{name}_{field}": np.dtype(dtype) for field, dtype in spec.items()})
        else:
            expected[name] = np.dtype(spec)
    with uproot.open(ttbar.files[0]) as file:
        tree = file["Events"]
        assert set(tree.keys()) == set(expected)
        for name, dtype in expected.items():
            interpretation = tree[name].interpretation
            content = getattr(interpretation, "content", interpretation)  # AsJagged wraps an AsDtype
            assert content.from_dtype.newbyteorder("=") == dtype, name
        assert tree["Jet_pt"].count_branch.name == "nJet"
        assert tree.num_entries == 3000


def test_counters_match_jagged_lengths(ttbar_arrays: ak.Array) -> None:
    for name, fields in COLLECTIONS.items():
        counts = ak.to_numpy(ttbar_arrays[f"n{name}"])
        for field in fields:
            assert np.array_equal(ak.to_numpy(ak.num(ttbar_arrays[f"{name}_{field}"])), counts)


def test_objects_sorted_by_pt(ttbar_arrays: ak.Array) -> None:
    for name in COLLECTIONS:
        pt = ttbar_arrays[f"{name}_pt"]
        assert ak.all(pt[:, :-1] >= pt[:, 1:]), name


def test_values_in_physical_ranges(ttbar_arrays: ak.Array) -> None:
    a = ttbar_arrays
    flat = {key: ak.to_numpy(ak.flatten(a[key])) for key in a.fields if a[key].ndim == 2}
    assert np.array_equal(ak.to_numpy(a.event), np.arange(1, len(a) + 1))
    assert np.all(ak.to_numpy(a.run) == 1)
    assert np.all(np.diff(ak.to_numpy(a.luminosityBlock)) >= 0)
    weights = ak.to_numpy(a.genWeight)
    assert np.mean(weights > 0) > 0.98
    assert np.all(flat["Jet_pt"] >= 15)
    assert np.all(flat["Jet_pt"] < 3500)
    assert np.all(np.abs(flat["Jet_eta"]) <= 4.7)
    assert np.all(flat["Jet_mass"] > 0)
    assert np.all(flat["Jet_mass"] < flat["Jet_pt"])
    assert np.all((flat["Jet_btagCSVV2"] >= 0) & (flat["Jet_btagCSVV2"] <= 1))
    assert set(np.unique(flat["Jet_jetId"])) <= {0, 2, 6}
    for name, eta_max in (("Electron", 2.5), ("Muon", 2.4)):
        assert np.all(np.abs(flat[f"{name}_eta"]) < eta_max)
        assert np.all(flat[f"{name}_pt"] > 3)
        assert set(np.unique(flat[f"{name}_charge"])) == {-1, 1}
        assert np.all(flat[f"{name}_mass"] > 0)
    assert np.all(flat["Electron_pfRelIso03_all"] >= 0)
    assert np.all(flat["Muon_pfRelIso04_all"] >= 0)
    assert set(np.unique(flat["Electron_cutBased"])) <= {0, 1, 2, 3, 4}
    for key in ("Jet_phi", "Electron_phi", "Muon_phi"):
        assert np.all(np.abs(flat[key]) <= np.float32(np.pi) + 1e-3)
    met = ak.to_numpy(a.MET_pt)
    assert np.all(met >= 0)
    assert 20 < np.mean(met) < 100
    assert np.all(np.abs(ak.to_numpy(a.MET_phi)) <= np.float32(np.pi) + 1e-3)


def test_nanoaod_precision(ttbar_arrays: ak.Array) -> None:
    """Like NanoAOD, pT keeps 10 mantissa bits and angles 12: the low bits are zero."""
    for key, bits in (("Jet_pt", 10), ("Jet_mass", 10), ("Jet_eta", 12), ("Muon_phi", 12)):
        raw = ak.to_numpy(ak.flatten(ttbar_arrays[key])).astype(np.float32).view(np.uint32)
        assert np.all(raw & np.uint32((1 << (23 - bits)) - 1) == 0), key


def test_ttbar_content(ttbar_arrays: ak.Array) -> None:
    a = ttbar_arrays
    assert 5.5 < ak.mean(a.nJet) < 7.5
    assert ak.all(ak.sum(a.Jet_btagCSVV2 > 0, axis=1) >= 2)  # two b jets in every event
    assert ak.mean(ak.sum(a.Jet_btagCSVV2 > 0.5, axis=1)) > 1.4
    prompt_like = (a.Muon_pt > 20) & (a.Muon_pfRelIso04_all < 0.15)
    electrons = (a.Electron_pt > 20) & (a.Electron_pfRelIso03_all < 0.15)
    n_leptons = ak.sum(prompt_like, axis=1) + ak.sum(electrons, axis=1)
    assert ak.mean(n_leptons == 1) > 0.45


def test_reads_with_coffea_nanoevents(ttbar: SampleInfo, ttbar_arrays: ak.Array) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    events = NanoEventsFactory.from_root(
        {ttbar.files[0]: "Events"}, schemaclass=NanoAODSchema, mode="eager"
    ).events()
    for name in ("Jet", "Electron", "Muon", "MET"):
        assert name in events.fields
    for nano, plain in (
        (events.Jet.pt, ttbar_arrays.Jet_pt),
        (events.Electron.pt, ttbar_arrays.Electron_pt),
        (events.Muon.tightId, ttbar_arrays.Muon_tightId),
        (events.MET.pt, ttbar_arrays.MET_pt),
    ):
        assert ak.array_equal(nano, plain, check_parameters=False)  # coffea adds __doc__ parameters
    assert ak.all(events.Jet.isTight == ((ttbar_arrays.Jet_jetId & 2) == 2))
    dijet = events.Jet[:, 0] + events.Jet[:, 1]  # four-vector behaviour works
    assert ak.all(dijet.mass > 0)


def test_same_seed_same_events(tmp_path: Path, ttbar: SampleInfo, ttbar_arrays: ak.Array) -> None:
    again = make_sample("ttbar", 3000, tmp_path / "again", seed=7, events_per_file=1100)
    assert len(again.files) == 3
    assert again.sum_genweight == pytest.approx(ttbar.sum_genweight, rel=1e-12)
    assert ak.array_equal(_read(again), ttbar_arrays)  # same events whatever the file split


def test_different_seed_or_process_differs(tmp_path: Path, ttbar_arrays: ak.Array) -> None:
    other_seed = _read(make_sample("ttbar", 3000, tmp_path / "seed", seed=8))
    assert not np.array_equal(ak.to_numpy(other_seed.MET_pt), ak.to_numpy(ttbar_arrays.MET_pt))
    other_process = _read(make_sample("ttbar_scaleup", 3000, tmp_path / "proc", seed=7))
    assert not np.array_equal(ak.to_numpy(other_process.MET_pt), ak.to_numpy(ttbar_arrays.MET_pt))


def test_processes_are_distinct(tmp_path: Path) -> None:
    tt = _read(make_sample("ttbar", 20_000, tmp_path, seed=1))
    wj = _read(make_sample("wjets", 20_000, tmp_path, seed=1))
    assert ak.mean(tt.nJet) > ak.mean(wj.nJet) + 3
    assert ak.mean(ak.sum(tt.Jet_btagCSVV2 > 0.5, axis=1)) > 1.4
    assert ak.mean(ak.sum(wj.Jet_btagCSVV2 > 0.5, axis=1)) < 0.3
    assert ak.mean(tt.Jet_pt[:, 0]) > 2 * ak.mean(ak.firsts(wj.Jet_pt))


def test_ttbar_variations_small_but_visible(tmp_path: Path) -> None:
    njet = {
        name: ak.mean(_read(make_sample(name, 20_000, tmp_path, seed=3)).nJet)
        for name in ("ttbar_scaledown", "ttbar", "ttbar_scaleup")
    }
    assert njet["ttbar_scaledown"] > njet["ttbar"] > njet["ttbar_scaleup"]
    assert njet["ttbar_scaledown"] / njet["ttbar_scaleup"] < 1.1
    for name in ("ttbar_scaledown", "ttbar_scaleup", "ttbar_me_var", "ttbar_ps_var"):
        assert PROCESSES[name].xsec_pb == PROCESSES["ttbar"].xsec_pb


def test_drell_yan_z_peak(tmp_path: Path) -> None:
    a = _read(make_sample("dy", 5000, tmp_path))
    for name in ("Electron", "Muon"):
        two = a[a[f"n{name}"] >= 2]
        pt, eta, phi, charge = (two[f"{name}_{f}"][:, :2] for f in ("pt", "eta", "phi", "charge"))
        mass2 = 2 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1]))
        mass = np.sqrt(ak.to_numpy(mass2))
        opposite = ak.to_numpy(charge[:, 0] != charge[:, 1])
        assert len(mass) > 500
        assert opposite.mean() > 0.95
        assert abs(np.median(mass[opposite]) - 91.2) < 2
        assert np.mean(np.abs(mass[opposite] - 91.2) < 10) > 0.85


def test_events_per_file_and_metadata(tmp_path: Path) -> None:
    info = make_sample("single_top_t_chan", 2500, tmp_path, seed=4, events_per_file=1000)
    assert info.files == [str(tmp_path / f"single_top_t_chan_{i}.root") for i in range(3)]
    entries = []
    for path in info.files:
        with uproot.open(path) as file:
            entries.append(file["Events"].num_entries)
    assert entries == [1000, 1000, 500]
    assert info.events == 2500
    weights = ak.to_numpy(_read(info).genWeight).astype(np.float64)
    assert info.sum_genweight == pytest.approx(weights.sum(), rel=1e-9)
    assert info.xsec_pb == PROCESSES["single_top_t_chan"].xsec_pb

    raw = json.loads((tmp_path / "metadata.json").read_text())["samples"]["single_top_t_chan"]
    assert raw["files"] == [Path(f).name for f in info.files]  # relative: the directory can move
    assert {k: v for k, v in raw.items() if k != "files"} == {
        "process": info.process,
        "events": info.events,
        "sum_genweight": info.sum_genweight,
        "xsec_pb": info.xsec_pb,
        "treename": "Events",
        "seed": 4,
        "compression": "zstd",
        "compression_level": 1,
    }
    assert load_samples(tmp_path) == {"single_top_t_chan": info}
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_rewriting_a_sample_removes_its_old_files(tmp_path: Path) -> None:
    make_sample("wjets", 300, tmp_path, events_per_file=100)
    (tmp_path / "unrelated_7.root").write_bytes(b"")
    info = make_sample("wjets", 300, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.root")) == ["unrelated_7.root", "wjets_0.root"]
    assert load_samples(tmp_path) == {"wjets": info}


def test_several_processes_share_a_directory(tmp_path: Path) -> None:
    infos = [make_sample(name, 300, tmp_path) for name in ("dy", "wjets")]
    assert load_samples(tmp_path) == {info.process: info for info in infos}
    fileset = sample_fileset(infos)
    assert fileset["dy"] == {
        "files": {infos[0].files[0]: "Events"},
        "metadata": {
            "xsec": PROCESSES["dy"].xsec_pb,
            "sum_genweight": infos[0].sum_genweight,
            "nevents": 300,
            "process": "dy",
        },
    }
    assert set(fileset) == {"dy", "wjets"}
    with pytest.raises(ConfigError, match="two samples of process 'dy'"):
        sample_fileset([infos[0], infos[0]])


@pytest.mark.parametrize(("compression", "algorithm"), [("zstd", "ZSTD"), ("lz4", "LZ4"), ("LZ4", "LZ4")])
def test_compressions_readable(tmp_path: Path, compression: str, algorithm: str) -> None:
    info = make_sample("wjets", 1000, tmp_path, compression=compression, seed=2)
    with uproot.open(info.files[0]) as file:
        assert type(file.file.compression).__name__ == algorithm
        assert len(file["Events"].arrays(["Jet_pt", "Muon_tightId"])) == 1000
    assert info.compression == compression.lower()


def test_compression_level(tmp_path: Path) -> None:
    fast = make_sample("ttbar", 5000, tmp_path / "fast", compression_level=1)
    small = make_sample("ttbar", 5000, tmp_path / "small", compression_level=9)
    assert small.compression_level == 9
    size = {info.compression_level: Path(info.files[0]).stat().st_size for info in (fast, small)}
    assert size[9] < size[1]
    assert ak.array_equal(_read(fast), _read(small))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"process": "ttbarr"}, r"unknown process 'ttbarr'.*Did you mean 'ttbar'.*'single_top_tW'.*'wjets'"),
        ({"process": "data"}, r"unknown process 'data'\. .*Available processes: 'dy', "),
        ({"events": 0}, "events must be a positive integer, got 0"),
        ({"events": -5}, "events must be a positive integer"),
        ({"events": 1.5}, "events must be a positive integer"),
        ({"events_per_file": 0}, "events_per_file must be a positive integer"),
        ({"compression": "gzip"}, r"unknown compression 'gzip'.*'lz4', 'zstd'"),
        ({"compression_level": 23}, "between 1 and 22"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    arguments = {"process": "ttbar", "events": 10, "out": tmp_path / "out"} | kwargs
    with pytest.raises(ConfigError, match=match):
        make_sample(**arguments)
    assert not (tmp_path / "out").exists()  # nothing written for a bad call


def test_unknown_process_error_lists_every_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_sample("zprime", 10, tmp_path)
    assert excinfo.value.key == "process"
    for name in PROCESSES:
        assert repr(name) in str(excinfo.value)


@pytest.mark.parametrize("module", ["", ".generator", ".writer"])
def test_docstring_examples(module: str) -> None:
    module = importlib.import_module(f"distproc.samples{module}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_make_sample_is_in_distproc_samples_not_the_top_level() -> None:
    import distproc

    assert "make_sample" not in distproc.__all__
    assert not hasattr(distproc, "make_sample")
    assert samples.make_sample.__module__ == "distproc.samples.writer"


def test_truth_roles_reconstruct_top_and_w(tmp_path: Path) -> None:
    """The jets tagged as the hadronic top's decay products give the top and W mass peaks."""
    a = _read(make_sample("ttbar", 20_000, tmp_path, seed=5))
    role = a.Jet_truthRole
    assert set(np.unique(ak.to_numpy(ak.flatten(role)))) <= set(samples.TRUTH_ROLES)
    full = (ak.sum(role == 1, axis=1) == 1) & (ak.sum(role == 3, axis=1) == 2)
    assert 0.5 < ak.mean(full) < 0.8  # lost quarks (below threshold, outside acceptance) and W -> l nu
    jets = a[full]
    picked = (jets.Jet_truthRole == 1) | (jets.Jet_truthRole == 3)
    pt, eta, phi, mass = (jets[f"Jet_{f}"][picked] for f in ("pt", "eta", "phi", "mass"))
    px, py = ak.sum(pt * np.cos(phi), axis=1), ak.sum(pt * np.sin(phi), axis=1)
    pz = ak.sum(pt * np.sinh(eta), axis=1)
    energy = ak.sum(np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2), axis=1)
    top_mass = ak.to_numpy(np.sqrt(energy**2 - px**2 - py**2 - pz**2))
    assert abs(np.median(top_mass) - 172.5) < 6
    assert np.mean(np.abs(top_mass - 172.5) < 25) > 0.6
    wjets = _read(make_sample("wjets", 2000, tmp_path, seed=5))
    assert ak.all(wjets.Jet_truthRole == 0)  # no top, no W quark jets


def test_lepton_sip3d(ttbar_arrays: ak.Array) -> None:
    for name in ("Electron", "Muon"):
        sip3d = ak.to_numpy(ak.flatten(ttbar_arrays[f"{name}_sip3d"]))
        assert np.all(sip3d >= 0)
        hard = ak.to_numpy(ak.flatten(ttbar_arrays[f"{name}_pt"])) > 30  # mostly prompt
        assert np.mean(sip3d[hard] < 4) > 0.95
        assert np.mean(sip3d[~hard] < 4) < 0.85  # mostly non-prompt
