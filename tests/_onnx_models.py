"""Small ONNX models built in the tests (nothing is downloaded): MLPs with onnx.helper, BDTs via skl2onnx
and onnxmltools."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _dense(nodes: list, inits: list, x: str, w: np.ndarray, b: np.ndarray, name: str, act: str | None) -> str:
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    nodes.append(helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]))
    nodes.append(helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_z"]))
    if act is None:
        return f"{name}_z"
    nodes.append(helper.make_node(act, [f"{name}_z"], [f"{name}_a"]))
    return f"{name}_a"


def _model(nodes: list, inits: list, inputs: list, outputs: list) -> bytes:
    graph = helper.make_graph(nodes, "test-model", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def mlp(
    n_in: int = 10,
    hidden: tuple[int, ...] = (64, 64, 64),
    n_out: int = 1,
    *,
    seed: int = 0,
    input_shape: list | None = None,
    elem_type: int = TensorProto.FLOAT,
    sigmoid: bool = True,
) -> bytes:
    """An MLP ``x -> y``: input ``input_shape`` (default ``[N, n_in]``; a rank-3 shape is flattened first)."""
    rng = np.random.default_rng(seed)
    dtype = np.float64 if elem_type == TensorProto.DOUBLE else np.float32
    shape = input_shape or ["N", n_in]
    nodes: list = []
    inits: list = []
    x = "x"
    if len(shape) == 3:
        inits.append(numpy_helper.from_array(np.array([-1, n_in], dtype=np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["x", "flat_shape"], ["x_flat"]))
        x = "x_flat"
    sizes = [n_in, *hidden, n_out]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(dtype)
        bias = (0.1 * rng.normal(size=b)).astype(dtype)
        last = i == len(sizes) - 2
        x = _dense(nodes, inits, x, w, bias, f"l{i}", ("Sigmoid" if sigmoid else None) if last else "Relu")
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    return _model(
        nodes,
        inits,
        [helper.make_tensor_value_info("x", elem_type, shape)],
        [helper.make_tensor_value_info("y", elem_type, ["N", n_out])],
    )


def two_inputs(n_objects: int = 4, n_obj_feat: int = 3, n_event_feat: int = 2, seed: int = 1) -> bytes:
    """Inputs ``jets`` ``[N, n_objects, n_obj_feat]`` and ``event`` ``[N, n_event_feat]`` -> ``score``."""
    rng = np.random.default_rng(seed)
    n_in = n_objects * n_obj_feat + n_event_feat
    inits = [numpy_helper.from_array(np.array([-1, n_objects * n_obj_feat], dtype=np.int64), "flat_shape")]
    nodes = [
        helper.make_node("Reshape", ["jets", "flat_shape"], ["jets_flat"]),
        helper.make_node("Concat", ["jets_flat", "event"], ["x"], axis=1),
    ]
    h = _dense(
        nodes,
        inits,
        "x",
        rng.normal(size=(n_in, 16)).astype(np.float32),
        np.zeros(16, np.float32),
        "h",
        "Tanh",
    )
    out = _dense(
        nodes, inits, h, rng.normal(size=(16, 2)).astype(np.float32), np.zeros(2, np.float32), "o", None
    )
    nodes.append(helper.make_node("Identity", [out], ["score"]))
    return _model(
        nodes,
        inits,
        [
            helper.make_tensor_value_info("jets", TensorProto.FLOAT, ["N", n_objects, n_obj_feat]),
            helper.make_tensor_value_info("event", TensorProto.FLOAT, ["N", n_event_feat]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 2])],
    )


def int_input() -> bytes:
    """Input ``idx`` int64 ``[N, 2]`` -> output ``s`` float ``[N, 1]`` (sum as float)."""
    nodes = [
        helper.make_node("Cast", ["idx"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
    ]
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    return _model(
        nodes,
        inits,
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1])],
    )


def training_data(n: int = 3000, n_feat: int = 4, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_feat)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def sklearn_bdt(n_feat: int = 4) -> tuple[object, bytes]:
    """A fitted GradientBoostingClassifier and its ONNX export (probabilities as a tensor, no ZipMap)."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = training_data(n_feat=n_feat)
    clf = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    proto = to_onnx(
        clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": OPSET, "ai.onnx.ml": 3}
    )
    return clf, proto.SerializeToString()


def sklearn_bdt_zipmap(n_feat: int = 4) -> bytes:
    """The same BDT exported with sklearn's default ZipMap (probabilities as a list of dicts)."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = training_data(n_feat=n_feat)
    clf = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    return to_onnx(clf, x[:1], target_opset={"": OPSET, "ai.onnx.ml": 3}).SerializeToString()


def xgboost_bdt(n_feat: int = 4) -> tuple[object, bytes]:
    """A fitted XGBClassifier and its ONNX export through onnxmltools."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBClassifier

    x, y = training_data(n_feat=n_feat)
    clf = XGBClassifier(n_estimators=40, max_depth=3, learning_rate=0.3, tree_method="hist", n_jobs=1)
    clf.fit(x, y)
    proto = convert_xgboost(clf, initial_types=[("x", FloatTensorType([None, n_feat]))], target_opset=15)
    return clf, proto.SerializeToString()
