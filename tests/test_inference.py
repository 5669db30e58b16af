"""ONNX inference on awkward arrays: layouts, batching, validation, sessions, dask-awkward, workers, GPU."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import awkward as ak
import dask
import dask_awkward as dak
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from distproc.exceptions import InferenceError
from distproc.inference import (
    BACKENDS,
    BackendUnavailableError,
    CPUBackend,
    CUDABackend,
    GPUUnavailableWarning,
    InferenceBackend,
    InferenceInputError,
    ModelLoadError,
    ModelNotFoundError,
    OnnxModel,
    available_backends,
    get_backend,
    resolve_backend,
    sessions_created,
)

sys.path.insert(0, str(Path(__file__).parent))
import _onnx_models as models

FEATURES = [f"f{i}" for i in range(10)]


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    path.write_bytes(models.mlp())
    return path


@pytest.fixture(scope="module")
def raw_mlp(mlp_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"])


def raw_run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def make_jets(n_events: int, seed: int = 0, mean: float = 3.0, n_feat: int = 10) -> ak.Array:
    """Jagged jets with *n_feat* float32 fields; some events have no jet."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean, n_events)
    counts[::5] = 0
    fields = {
        f"f{i}": ak.unflatten(rng.normal(size=counts.sum()).astype(np.float32), counts) for i in range(n_feat)
    }
    return ak.zip(fields)


def rows_of(jets: ak.Array, names: list[str]) -> np.ndarray:
    return np.stack([ak.to_numpy(ak.flatten(jets[n])) for n in names], axis=1)


def pad_by_hand(jets: ak.Array, n: int, names: list[str], fill: float) -> np.ndarray:
    padded = np.full((len(jets), n, len(names)), fill, dtype=np.float32)
    for i, event in enumerate(jets.tolist()):
        for j, jet in enumerate(event[:n]):
            padded[i, j] = [jet[name] for name in names]
    return padded


# ---------------------------------------------------------------------------------------- layouts and values
def test_event_features_match_onnxruntime(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    rng = np.random.default_rng(1)
    features = {name: rng.normal(size=500) for name in FEATURES}  # float64: converted to float32
    model = OnnxModel(mlp_path, backend="cpu")
    out = model(features)
    assert isinstance(out, ak.Array)
    assert str(out.type) == "500 * float32"
    expected = raw_run(raw_mlp, np.stack(list(features.values()), axis=1))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(out), expected, atol=1e-6, rtol=0)
    record = ak.zip({name: features[name] for name in FEATURES})
    np.testing.assert_allclose(ak.to_numpy(model(record)), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ak.to_numpy(model(np.stack(list(features.values()), 1))), expected, atol=1e-6)


def test_declared_features_select_and_order_fields(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    jets = make_jets(50)
    order = FEATURES[::-1]
    jets = ak.with_field(jets, ak.ones_like(jets.f0) * 7, "unused")
    out = OnnxModel(mlp_path, backend="cpu", features=order)(jets)
    expected = raw_run(raw_mlp, rows_of(jets, order))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), expected, atol=1e-6, rtol=0)


def test_objects_layout_is_aligned_event_by_event(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    jets = make_jets(120, seed=3)
    model = OnnxModel(mlp_path, backend="cpu", features=FEATURES, batch_size=17)
    out = model(jets)
    assert str(out.type) == "120 * var * float32"
    assert ak.num(out).tolist() == ak.num(jets).tolist()
    for i in range(len(jets)):
        event = jets[i : i + 1]
        if len(event[0]) == 0:
            assert out[i].tolist() == []
            continue
        expected = raw_run(raw_mlp, rows_of(event, FEATURES))[:, 0]
        np.testing.assert_allclose(ak.to_numpy(out[i]), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "select",
    [
        pytest.param(lambda j: j[50:120], id="sliced"),
        pytest.param(lambda j: j[j.f0 > 0], id="jets-filtered"),
        pytest.param(lambda j: j[ak.num(j) > 2], id="events-filtered"),
        pytest.param(lambda j: j[np.arange(len(j))[::-3]], id="events-reordered"),
    ],
)
def test_sliced_and_filtered_collections(mlp_path: Path, raw_mlp: ort.InferenceSession, select) -> None:
    jets = select(make_jets(200, seed=12))
    out = OnnxModel(mlp_path, backend="cpu", features=FEATURES, batch_size=50)(jets)
    assert ak.num(out).tolist() == ak.num(jets).tolist()
    expected = raw_run(raw_mlp, rows_of(jets, FEATURES))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), expected, atol=1e-6, rtol=0)


def test_masked_objects_take_the_fill_value(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    jets = make_jets(100, seed=13)
    masked = ak.mask(jets, jets.f0 > 0)  # some jets are None
    out = OnnxModel(mlp_path, backend="cpu", fill_value=-1.0)(masked)
    assert ak.num(out).tolist() == ak.num(jets).tolist()
    filled = ak.zip({f: ak.fill_none(masked[f], -1.0) for f in FEATURES})
    expected = raw_run(raw_mlp, rows_of(filled, FEATURES))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("spare_core", [True, False], ids=["next-batch-on-another-thread", "one-thread"])
def test_batching_gives_the_same_values(
    mlp_path: Path, monkeypatch: pytest.MonkeyPatch, spare_core: bool
) -> None:
    """Where a core is left over by the session's threads, the next batch is laid out on another thread
    while the session runs this one (two buffers in turn): the values are those of one big batch."""
    import threading

    from distproc.inference import _features
    from distproc.inference import model as model_module

    monkeypatch.setattr(model_module, "_spare_core", lambda threads: spare_core)
    filled_on: set[str] = set()
    batch = _features.Prepared.batch

    def recorded(self, *args):
        filled_on.add(threading.current_thread().name)
        return batch(self, *args)

    jets = make_jets(300, seed=4)
    big = OnnxModel(mlp_path, backend="cpu", features=FEATURES)(jets)
    monkeypatch.setattr(_features.Prepared, "batch", recorded)
    for batch_size in (1, 7, 64):
        small = OnnxModel(mlp_path, backend="cpu", features=FEATURES, batch_size=batch_size)(jets)
        assert ak.all(ak.num(small) == ak.num(big))
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(small)), ak.to_numpy(ak.flatten(big)))
    assert any(name.startswith("distproc-batch-fill") for name in filled_on) == spare_core
    assert (threading.current_thread().name in filled_on) != spare_core


def _score_in_child(model: OnnxModel, jets: ak.Array) -> list:
    return ak.to_list(model(jets))


def test_a_forked_process_lays_out_batches_on_its_own_thread(
    mlp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process forked after this one laid out batches on its background thread (a fork-based pool, as
    coffea's FuturesExecutor can use) gets a thread of its own, instead of waiting for the parent's."""
    import concurrent.futures
    import multiprocessing

    from distproc.inference import model as model_module

    monkeypatch.setattr(model_module, "_spare_core", lambda threads: True)
    jets = make_jets(200, seed=8)
    model = OnnxModel(mlp_path, backend="cpu", features=FEATURES, batch_size=16)
    here = ak.to_list(model(jets))  # the background thread now exists in this process
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        there = pool.submit(_score_in_child, model, jets).result(timeout=120)
    assert there == here


@pytest.mark.parametrize("input_shape", [["N", 4, 3], ["N", 12]], ids=["rank3", "flat"])
def test_padded_layout(tmp_path: Path, input_shape: list) -> None:
    path = tmp_path / "padded.onnx"
    path.write_bytes(models.mlp(n_in=12, hidden=(8,), input_shape=input_shape))
    jets = make_jets(60, seed=5, mean=4, n_feat=3)
    model = OnnxModel(path, backend="cpu", fill_value=-9.0)  # layout and max_objects=4 read off the model
    out = model(jets)
    assert str(out.type) == "60 * float32"
    padded = pad_by_hand(jets, 4, ["f0", "f1", "f2"], -9.0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = raw_run(session, padded if len(input_shape) == 3 else padded.reshape(60, 12))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(out), expected, atol=1e-6, rtol=0)
    explicit = OnnxModel(path, backend="cpu", layout="padded", max_objects=4, fill_value=-9.0)(jets)
    np.testing.assert_array_equal(ak.to_numpy(explicit), ak.to_numpy(out))


def test_event_features_broadcast_to_objects(tmp_path: Path) -> None:
    path = tmp_path / "m3.onnx"
    path.write_bytes(models.mlp(n_in=3, hidden=(8,)))
    jets = make_jets(40, seed=6, n_feat=2)
    rho = np.arange(40, dtype=np.float32)
    out = OnnxModel(path, backend="cpu")({"pt": jets.f0, "eta": jets.f1, "rho": rho})
    rows = np.stack(
        [ak.to_numpy(ak.flatten(jets.f0)), ak.to_numpy(ak.flatten(jets.f1)), np.repeat(rho, ak.num(jets))], 1
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), raw_run(session, rows)[:, 0], atol=1e-6)
    assert ak.num(out).tolist() == ak.num(jets).tolist()


def test_missing_values_take_the_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "m2.onnx"
    path.write_bytes(models.mlp(n_in=2, hidden=(4,)))
    model = OnnxModel(path, backend="cpu", fill_value=0.5)
    a = ak.Array([1.0, None, 3.0])
    out = model({"a": a, "b": np.ones(3)})
    ref = model({"a": np.array([1.0, 0.5, 3.0]), "b": np.ones(3)})
    np.testing.assert_array_equal(ak.to_numpy(out), ak.to_numpy(ref))


def test_two_input_model_by_name() -> None:
    model = OnnxModel.from_bytes(models.two_inputs(), backend="cpu", fill_value=0.0)
    jets = make_jets(30, seed=7, n_feat=3)
    event = {"met": np.linspace(0, 1, 30), "ht": np.linspace(1, 2, 30)}
    out = model(jets=jets, event=event)
    assert str(out.type) == "30 * 2 * float32"
    padded = pad_by_hand(jets, 4, ["f0", "f1", "f2"], 0.0)
    session = ort.InferenceSession(models.two_inputs(), providers=["CPUExecutionProvider"])
    expected = session.run(
        None, {"jets": padded, "event": np.stack(list(event.values()), 1).astype(np.float32)}
    )[0]
    np.testing.assert_allclose(ak.to_numpy(out), expected, atol=1e-6, rtol=0)
    with pytest.raises(
        InferenceInputError, match=r"has 2 inputs; pass them by name: model\(jets=\.\.\., event=\.\.\.\)"
    ):
        model(jets)
    with pytest.raises(InferenceInputError, match=r"no input 'jet'.*Did you mean 'jets'"):
        model(jet=jets, event=event)
    with pytest.raises(InferenceInputError, match=r"input\(s\) 'event' .* not given"):
        model(jets=jets)


def test_sklearn_bdt_matches_sklearn() -> None:
    clf, onnx_bytes = models.sklearn_bdt()
    x, _ = models.training_data(n=2000, seed=9)
    model = OnnxModel.from_bytes(
        onnx_bytes, backend="cpu", outputs="probabilities", features=["a", "b", "c", "d"]
    )
    events = ak.zip(dict(zip(["d", "c", "b", "a"], x.T[::-1], strict=True)))  # fields in another order
    out = model(events)
    assert str(out.type) == "2000 * 2 * float32"
    np.testing.assert_allclose(ak.to_numpy(out), clf.predict_proba(x), atol=1e-5, rtol=0)
    both = OnnxModel.from_bytes(onnx_bytes, backend="cpu")(x)
    assert ak.fields(both) == ["label", "probabilities"]
    np.testing.assert_array_equal(ak.to_numpy(both.label), clf.predict(x))


def test_xgboost_bdt_matches_xgboost() -> None:
    clf, onnx_bytes = models.xgboost_bdt()
    x, _ = models.training_data(n=2000, seed=10)
    jets = ak.unflatten(ak.zip({f"v{i}": x[:, i] for i in range(4)}), [0, 3, 1, 996, 0, 1000])
    out = OnnxModel.from_bytes(onnx_bytes, backend="cpu", outputs=["probabilities"])(jets)
    assert str(out.type) == "6 * var * 2 * float32"
    assert ak.num(out).tolist() == [0, 3, 1, 996, 0, 1000]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), clf.predict_proba(x), atol=1e-5, rtol=0)
    both = OnnxModel.from_bytes(onnx_bytes, backend="cpu")(jets)  # several outputs: jagged records
    assert str(both.type) == "6 * var * {label: int64, probabilities: 2 * float32}"
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(both.label)), clf.predict(x))


def test_columns_fed_feature_major_to_a_model_without_the_default_domain() -> None:
    """Feature columns go to the session feature-major through a Transpose distproc adds in front of the
    graph; a model that imports only ``ai.onnx.ml`` gets the default domain for it."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5)],
        "binarize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)])
    proto.ir_version = 8
    assert [o.domain for o in proto.opset_import] == ["ai.onnx.ml"]
    jets = make_jets(50, n_feat=3)
    out = OnnxModel.from_bytes(proto.SerializeToString(), backend="cpu", batch_size=7)(jets)
    rows = rows_of(jets, ["f0", "f1", "f2"])
    assert ak.num(out).tolist() == ak.num(jets).tolist()
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(out)), (rows > 0.5).astype(np.float32))


def test_sklearn_zipmap_output_is_explained() -> None:
    onnx_bytes = models.sklearn_bdt_zipmap()
    model = OnnxModel.from_bytes(onnx_bytes, backend="cpu")
    assert model.output_names == ("output_label",)
    with pytest.raises(InferenceError, match=r"not a tensor .*zipmap"):
        OnnxModel.from_bytes(onnx_bytes, backend="cpu", outputs="output_probability")


# ------------------------------------------------------------------------------------------------- bad input
def test_missing_model_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(ModelNotFoundError, match=r"nowhere/model\.onnx") as info:
        OnnxModel(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, InferenceError)
    assert info.value.path == str(path)


@pytest.mark.parametrize("content", [b"this is a ROOT file, honest", b""], ids=["text", "empty"])
def test_file_that_is_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"weights\.onnx is not a valid ONNX model"):
        OnnxModel(path)


def test_feature_count_mismatch(mlp_path: Path) -> None:
    model = OnnxModel(mlp_path, backend="cpu")
    with pytest.raises(
        InferenceInputError, match=r"'x': float32\[N, 10\] expects 10 features on its last axis, given 9"
    ) as info:
        model({f"f{i}": np.zeros(3) for i in range(9)})
    assert info.value.input_name == "x"
    with pytest.raises(InferenceInputError, match=r"expects 10 features .* given 11"):
        model(np.zeros((3, 11), dtype=np.float32))


def test_feature_name_mismatch(mlp_path: Path) -> None:
    model = OnnxModel(mlp_path, backend="cpu", features=[*FEATURES[:9], "pt"])
    with pytest.raises(InferenceInputError, match=r"feature\(s\) 'pt' not given\. .*Available fields: 'f0'"):
        model(make_jets(5))


def test_rank_mismatch_and_padding_width(tmp_path: Path, mlp_path: Path) -> None:
    model = OnnxModel(mlp_path, backend="cpu")
    with pytest.raises(InferenceInputError, match=r"has rank 2, but .* gives rank 3"):
        model(np.zeros((4, 2, 10), dtype=np.float32))
    path = tmp_path / "p.onnx"
    path.write_bytes(models.mlp(n_in=12, hidden=(4,), input_shape=["N", 4, 3]))
    with pytest.raises(
        InferenceInputError, match=r"expects 4 on axis 1, given \(N, 5, 3\)\. Use max_objects=4"
    ):
        OnnxModel(path, backend="cpu", max_objects=5)(make_jets(5, n_feat=3))
    with pytest.raises(InferenceInputError, match=r"layout 'events' but features are jagged"):
        OnnxModel(mlp_path, backend="cpu", layout="events")(make_jets(5))


def test_dtype_mismatch() -> None:
    model = OnnxModel.from_bytes(models.int_input(), backend="cpu")
    ints = model({"a": np.array([1, 2]), "b": np.array([3, 4], dtype=np.int32)})
    assert ints.tolist() == [4.0, 6.0]
    with pytest.raises(
        InferenceInputError, match=r"feature 'a' has dtype float64, which does not convert to int64"
    ):
        model({"a": np.array([1.5, 2.0]), "b": np.array([3, 4])})
    with pytest.raises(InferenceInputError, match=r"feature 'b' holds strings"):
        model({"a": np.array([1, 2]), "b": ak.Array(["x", "y"])})
    double = models.mlp(n_in=3, hidden=(4,), elem_type=TensorProto.DOUBLE)
    x32 = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    out = OnnxModel.from_bytes(double, backend="cpu")(
        ak.zip({"a": x32[:, 0], "b": x32[:, 1], "c": x32[:, 2]})
    )
    assert str(out.type) == "20 * float64"
    session = ort.InferenceSession(double, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x32.astype(np.float64)})[0][:, 0]
    np.testing.assert_allclose(ak.to_numpy(out), expected, atol=1e-12, rtol=0)


def test_nan_passes_through_by_default_or_is_rejected(mlp_path: Path) -> None:
    features = {name: np.ones(4) for name in FEATURES}
    features["f3"] = np.array([1.0, np.nan, 1.0, 1.0])
    out = ak.to_numpy(OnnxModel(mlp_path, backend="cpu")(features))
    assert np.isnan(out[1])
    assert np.isfinite(out[[0, 2, 3]]).all()
    with pytest.raises(
        InferenceInputError, match=r"NaN in feature\(s\) 'f3' \(1 row\(s\) of this batch, first at row 1"
    ):
        OnnxModel(mlp_path, backend="cpu", nan="raise")(features)
    clf, onnx_bytes = models.xgboost_bdt()  # trees route NaN as a missing value, like xgboost itself
    x = np.array([[np.nan, 0.2, -0.1, 1.0]], dtype=np.float32)
    out = OnnxModel.from_bytes(onnx_bytes, backend="cpu", outputs="probabilities")(x)
    np.testing.assert_allclose(ak.to_numpy(out), clf.predict_proba(x), atol=1e-5)


def test_empty_chunk_and_events_without_objects(mlp_path: Path, tmp_path: Path) -> None:
    model = OnnxModel(mlp_path, backend="cpu", features=FEATURES)
    empty = make_jets(0)
    out = model(empty)
    assert len(out) == 0
    assert str(out.type) == "0 * var * float32"
    no_jets = make_jets(4, mean=0.0)
    out = model(no_jets)
    assert out.tolist() == [[], [], [], []]
    events = model({name: np.zeros(0) for name in FEATURES})
    assert str(events.type) == "0 * float32"
    path = tmp_path / "p.onnx"
    path.write_bytes(models.mlp(n_in=12, hidden=(4,), input_shape=["N", 4, 3]))
    padded = OnnxModel(path, backend="cpu")
    assert len(padded(make_jets(0, n_feat=3))) == 0
    assert len(padded(make_jets(3, mean=0.0, n_feat=3))) == 3


def test_bad_options(mlp_path: Path) -> None:
    with pytest.raises(InferenceError, match=r"unknown layout 'flat'.*Available layouts"):
        OnnxModel(mlp_path, layout="flat")
    with pytest.raises(InferenceError, match="batch_size must be a positive integer"):
        OnnxModel(mlp_path, batch_size=0)
    with pytest.raises(InferenceError, match="nan must be 'pass'"):
        OnnxModel(mlp_path, nan="drop")
    with pytest.raises(InferenceError, match=r"has no output 'score'.*Available outputs: 'y'"):
        OnnxModel(mlp_path, outputs="score")
    with pytest.raises(InferenceError, match=r"features names input 'X'.*Available inputs: 'x'"):
        OnnxModel(mlp_path, features={"X": FEATURES})


# ---------------------------------------------------------------------------------------- backends registry
def test_backend_registry_and_resolution() -> None:
    assert available_backends() == ("auto", *BACKENDS)
    assert get_backend("CPU") == CPUBackend()
    with pytest.raises(InferenceError, match=r"unknown inference backend 'gpu'.*'auto', 'cpu', 'cuda'"):
        get_backend("gpu")
    with pytest.raises(InferenceError, match="backend must be one of"):
        get_backend(42)  # type: ignore[arg-type]
    assert isinstance(CUDABackend(), InferenceBackend)
    assert CUDABackend(device_id=1, io_binding=False).providers[0] == (
        "CUDAExecutionProvider",
        {"device_id": "1", "use_tf32": "0"},  # GPU scores equal the CPU's within float32 rounding
    )
    assert CUDABackend(provider_options={"use_tf32": 1}).providers[0][1]["use_tf32"] == "1"


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="a GPU runtime is installed"
)
def test_cuda_requested_without_gpu_falls_back_with_warning(mlp_path: Path) -> None:
    assert isinstance(resolve_backend("auto"), CPUBackend)
    with pytest.raises(BackendUnavailableError, match="pip install 'distproc\\[gpu\\]'") as info:
        CUDABackend().check()
    assert isinstance(info.value, ImportError)
    with pytest.warns(GPUUnavailableWarning, match="falling back to the CPU"):
        assert isinstance(resolve_backend("cuda"), CPUBackend)
    model = OnnxModel(mlp_path, backend=CUDABackend())
    with pytest.warns(GPUUnavailableWarning):
        out = model({name: np.zeros(3) for name in FEATURES})
    assert len(out) == 3


class CountingBackend(CPUBackend):
    """A user backend: CPU execution that counts its runs."""

    name = "counting"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, session, batch, output_names):  # type: ignore[no-untyped-def]
        self.runs += 1
        return super().run(session, batch, output_names)


def test_custom_backend_instance_and_typetracer_does_not_run(mlp_path: Path) -> None:
    backend = CountingBackend()
    model = OnnxModel(mlp_path, backend=backend, features=FEATURES, batch_size=10)
    jets = make_jets(20)
    model(jets)
    assert backend.runs == -(-int(ak.sum(ak.num(jets))) // 10)
    before = backend.runs
    tracer = ak.Array(jets.layout.to_typetracer(forget_length=True))
    out = model(tracer)
    assert ak.backend(out) == "typetracer"
    assert str(out.type) == "## * var * float32"
    assert backend.runs == before


class RowMajorBackend:
    """A user backend written against the protocol alone (no ``feeds_columns``): records what it gets."""

    name = "row-major"
    providers = [("CPUExecutionProvider", {})]

    def __init__(self) -> None:
        self.fed: list[tuple[str, tuple[int, ...]]] = []

    def check(self) -> None:
        pass

    def run(self, session, batch, output_names):  # type: ignore[no-untyped-def]
        self.fed += [(name, array.shape) for name, array in batch.items()]
        return session.run(list(output_names), dict(batch))


def test_inputs_fed_feature_major_only_to_backends_that_take_them(mlp_path: Path) -> None:
    jets = make_jets(30)
    n_rows = int(ak.sum(ak.num(jets)))
    plain = RowMajorBackend()
    expected = ak.flatten(OnnxModel(mlp_path, backend=plain, features=FEATURES)(jets))
    assert plain.fed == [("x", (n_rows, 10))]  # the model's own input, row-major
    model = OnnxModel(mlp_path, backend="cpu", features=FEATURES)
    np.testing.assert_allclose(ak.flatten(model(jets)), expected, atol=1e-6, rtol=0)
    ((backend, session, fed),) = model._runtime.values()
    assert backend.feeds_columns
    assert fed == {"x"}
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("x.distproc_columns", [10, "N"])]
    assert not CUDABackend.feeds_columns


# ------------------------------------------------------------------------- sessions, pickling, dask-awkward
def test_session_built_once_and_reused(mlp_path: Path) -> None:
    model = OnnxModel(mlp_path, backend="cpu", threads=1)
    before = sessions_created()
    for seed in range(3):
        model(make_jets(10, seed=seed))
    clone = pickle.loads(pickle.dumps(model))
    clone(make_jets(10))
    assert sessions_created() - before == 1
    ((_, session, _),) = clone._runtime.values()  # the session its chunk ran on
    assert session.get_session_options().intra_op_num_threads == 1


def test_pickle_is_cheap_deterministic_and_never_rereads(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx_bytes = models.mlp()
    path.write_bytes(onnx_bytes)
    model = OnnxModel(path, backend="cpu")
    features = {name: np.ones(2) for name in FEATURES}
    expected = model(features)
    first, second = pickle.dumps(model), pickle.dumps(model)
    assert first == second
    assert len(onnx_bytes) < len(first) < len(onnx_bytes) + 4000
    assert dask.base.tokenize(model) == dask.base.tokenize(pickle.loads(first))
    path.unlink()  # the bytes travel with the object: no file access after construction
    assert pickle.loads(first)(features).tolist() == expected.tolist()


def test_dask_awkward_maps_partitions_and_projects_columns(mlp_path: Path) -> None:
    jets = make_jets(90, seed=8)
    jets = ak.with_field(jets, ak.ones_like(jets.f0), "unused")
    events = ak.zip({"Jet": jets, "run": np.ones(90, dtype=np.int32)}, depth_limit=1)
    lazy = dak.from_awkward(events, npartitions=3)
    model = OnnxModel(mlp_path, backend="cpu", features=FEATURES)
    out = model(lazy.Jet)
    assert isinstance(out, dak.Array)
    assert str(out._meta.type) == "## * var * float32"
    columns = next(iter(dak.report_necessary_columns(out).values()))
    assert sorted(columns) == sorted(f"Jet.{f}" for f in FEATURES)
    result = out.compute(scheduler="sync")
    expected = model(jets)
    assert ak.num(result).tolist() == ak.num(expected).tolist()
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(result)), ak.to_numpy(ak.flatten(expected)), atol=1e-6)
    # the model is one graph key, which every partition task depends on
    graph = dict(out.dask)
    assert sum(1 for key in graph if str(key).startswith("onnx-model-")) == 1


def test_nanoevents_collection_in_dask_and_eager_mode(nano_dy: Path) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    model = OnnxModel.from_bytes(
        models.mlp(n_in=4, hidden=(8,)), backend="cpu", features=["pt", "eta", "phi", "mass"]
    )
    source = {str(nano_dy): "Events"}
    lazy = NanoEventsFactory.from_root(source, schemaclass=NanoAODSchema, mode="dask").events()
    scores = model(lazy.Jet[lazy.Jet.pt > 20])
    columns = next(iter(dak.report_necessary_columns(scores).values()))
    assert sorted(columns) == ["Jet_eta", "Jet_mass", "Jet_phi", "Jet_pt", "nJet"]
    computed = scores.compute(scheduler="sync")
    eager = NanoEventsFactory.from_root(source, schemaclass=NanoAODSchema, mode="eager").events()
    jets = eager.Jet[eager.Jet.pt > 20]
    direct = model(jets)
    assert ak.num(computed).tolist() == ak.num(jets).tolist() == ak.num(direct).tolist()
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(computed)), ak.to_numpy(ak.flatten(direct)), atol=1e-6)


# -------------------------------------------------------------------------------- distributed workers
def _worker_session_threads(model: OnnxModel) -> int:
    model(make_jets(5))  # in the worker, the model reuses the session its chunks were run with
    ((_, session, _),) = model._runtime.values()
    return session.get_session_options().intra_op_num_threads


@pytest.mark.cluster
def test_on_two_worker_processes(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    distributed = pytest.importorskip("distributed")
    model = OnnxModel(mlp_path, backend="auto", features=FEATURES, batch_size=100)
    chunks = [make_jets(200, seed=s) for s in range(6)]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        workers = sorted(client.scheduler_info()["workers"])
        futures = [
            client.submit(model, chunk, workers=[workers[i % 2]], pure=False)
            for i, chunk in enumerate(chunks)
        ]
        results = client.gather(futures)
        counts = client.run(sessions_created)
        threads = [
            client.submit(_worker_session_threads, model, workers=[w], pure=False).result() for w in workers
        ]
        lazy = model(dak.from_awkward(ak.concatenate(chunks), npartitions=4))
        computed = client.compute(lazy).result()
        counts_after = client.run(sessions_created)
    for chunk, result in zip(chunks, results, strict=True):
        assert ak.num(result).tolist() == ak.num(chunk).tolist()
        expected = raw_run(raw_mlp, rows_of(chunk, FEATURES))[:, 0]
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(result)), expected, atol=1e-6, rtol=0)
    assert sorted(counts.values()) == [1, 1]  # one session per worker process, reused by 3 chunks each
    assert threads == [1, 1]  # follows the worker's nthreads
    assert sorted(counts_after.values()) == [1, 1]
    assert ak.num(computed).tolist() == ak.num(ak.concatenate(chunks)).tolist()


# ----------------------------------------------------------------------------------------------------- GPU
def _gpu_ready() -> bool:
    if (
        importlib.util.find_spec("cupy") is None
        or "CUDAExecutionProvider" not in ort.get_available_providers()
    ):
        return False
    try:
        CUDABackend().check()
    except BackendUnavailableError:
        return False
    return True


gpu = pytest.mark.skipif(not _gpu_ready(), reason="needs an NVIDIA GPU with CuPy and onnxruntime-gpu")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("io_binding", [True, False])
def test_cuda_matches_cpu(mlp_path: Path, io_binding: bool) -> None:
    jets = make_jets(3000, seed=11)
    cpu = OnnxModel(mlp_path, backend="cpu", features=FEATURES)(jets)
    cuda = OnnxModel(mlp_path, backend=CUDABackend(io_binding=io_binding), features=FEATURES, batch_size=1000)
    out = cuda(jets)
    assert ak.backend(out) == "cpu"
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), ak.to_numpy(ak.flatten(cpu)), atol=1e-5)


@pytest.mark.gpu
@gpu
def test_cuda_keeps_device_data_on_device(mlp_path: Path) -> None:
    import cupy

    x = cupy.asarray(np.random.default_rng(0).normal(size=(5000, 10)).astype(np.float32))
    model = OnnxModel(mlp_path, backend="cuda")
    out = model(x)
    assert ak.backend(out) == "cuda"
    cpu = OnnxModel(mlp_path, backend="cpu")(x.get())
    np.testing.assert_allclose(ak.to_numpy(ak.to_backend(out, "cpu")), ak.to_numpy(cpu), atol=1e-5)
    # jagged awkward input on the device: same scores, and bad input still gets distproc's error
    jets = make_jets(400, seed=3)
    on_gpu = OnnxModel(mlp_path, backend="cuda", features=FEATURES)(ak.to_backend(jets, "cuda"))
    assert ak.backend(on_gpu) == "cuda"
    assert ak.num(on_gpu).tolist() == ak.num(jets).tolist()
    expected = OnnxModel(mlp_path, backend="cpu", features=FEATURES)(jets)
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(ak.to_backend(on_gpu, "cpu"))), ak.to_numpy(ak.flatten(expected)), atol=1e-5
    )
    with pytest.raises(InferenceInputError, match=r"feature\(s\) 'f9' not given"):
        OnnxModel(mlp_path, backend="cuda", features=FEATURES)(ak.to_backend(jets[FEATURES[:9]], "cuda"))


def _worker_backend(model: OnnxModel) -> str:
    return model._session()[0].name


@pytest.mark.gpu
@pytest.mark.cluster
@gpu
def test_auto_backend_picks_cuda_on_gpu_workers(mlp_path: Path, raw_mlp: ort.InferenceSession) -> None:
    distributed = pytest.importorskip("distributed")
    model = OnnxModel(mlp_path, backend="auto", features=FEATURES, batch_size=500)
    jets = make_jets(2000, seed=5)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        computed = client.compute(model(dak.from_awkward(jets, npartitions=4))).result()
        backends = {
            client.submit(_worker_backend, model, workers=[w], pure=False).result()
            for w in client.scheduler_info()["workers"]
        }
    assert backends == {"cuda"}
    assert ak.num(computed).tolist() == ak.num(jets).tolist()
    expected = raw_run(raw_mlp, rows_of(jets, FEATURES))[:, 0]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(computed)), expected, atol=1e-5, rtol=0)
