"""Every distproc error lives in ``distproc.exceptions`` and survives pickling with its attributes."""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pickle
import pkgutil
from pathlib import Path

import pytest

import distproc
from distproc import exceptions
from distproc.exceptions import DistprocError, InferenceInputError, ModelLoadError

CLASSES = [
    obj
    for obj in vars(exceptions).values()
    if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__
]


def _value(parameter: inspect.Parameter) -> object:
    """A distinct value of the parameter's annotated type."""
    if "int" in str(parameter.annotation):
        return 10 + len(parameter.name)
    return f"<{parameter.name}>"


def _instance(cls: type[BaseException]) -> tuple[BaseException, dict[str, object]]:
    """*cls* built with a value for every parameter; returns the keyword arguments given too."""
    own = [c.__init__ for c in cls.__mro__ if "__init__" in vars(c) and c.__module__ == exceptions.__name__]
    if not own:  # the builtin's __init__: a message only
        return cls("the message"), {}
    parameters = list(inspect.signature(own[0]).parameters.values())[1:]  # without self
    positional = [_value(p) for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: _value(p) for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return cls(*positional, **keywords), keywords


def test_the_module_defines_every_error_and_warning():
    names = {cls.__name__ for cls in CLASSES}
    assert names <= set(exceptions.__all__)
    assert {"ModelLoadError", "InferenceInputError", "BinningError", "FitError", "PartitionError"} <= names


def test_every_distproc_error_is_defined_in_distproc_exceptions():
    """No subpackage defines its own errors: import every module, then look at every subclass."""
    for module in pkgutil.walk_packages(distproc.__path__, "distproc."):
        if not module.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
    pending, seen = [DistprocError], []
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending.extend(cls.__subclasses__())
    assert len(seen) > 10
    assert {cls.__module__ for cls in seen} == {"distproc.exceptions"}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_pickling_keeps_type_message_and_attributes(cls: type[BaseException]):
    err, keywords = _instance(cls)
    for name, value in keywords.items():  # the rule: every keyword argument is an attribute
        assert getattr(err, name) == value, f"{cls.__name__}({name}=...) does not keep it as .{name}"
    err.add_note("a note added on the worker")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert back.args == err.args
    assert str(back) == str(err)
    assert vars(back) == vars(err)
    for name, value in keywords.items():
        assert getattr(back, name) == value


def test_docstring_examples(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    result = doctest.testmod(exceptions, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def test_model_load_error_from_a_worker_keeps_its_attributes(client, tmp_path: Path):
    """Raised inside a Dask worker process, the error reaches the client with its type and path."""
    from distproc.inference import OnnxModel

    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not an ONNX model")
    future = client.submit(OnnxModel, str(path), pure=False)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx is not a valid ONNX model") as info:
        future.result()
    assert info.value.path == str(path)
    assert os.getpid() not in client.run(os.getpid).values()  # it was raised in another process


def test_inference_input_error_from_a_worker_keeps_its_attributes(client, tmp_path: Path):
    import _onnx_models as models
    import numpy as np

    from distproc.inference import OnnxModel

    path = tmp_path / "mlp.onnx"
    path.write_bytes(models.mlp(n_in=3, hidden=(4,)))
    model = OnnxModel(path, backend="cpu")
    future = client.submit(model, np.zeros((5, 2), dtype=np.float32), pure=False)
    with pytest.raises(InferenceInputError, match="expects 3 features") as info:
        future.result()
    assert info.value.input_name == model.inputs[0].name
