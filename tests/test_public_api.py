"""The public API is small and deliberate: this pins it (update on purpose, not by accident)."""

import distproc

EXPECTED = (
    "BinnedLookup",
    "ClusterError",
    "ConfigError",
    "Correction",
    "DaskModeError",
    "DistprocError",
    "FilesetError",
    "InferenceError",
    "OnnxModel",
    "PartitionError",
    "Processor",
    "ProcessorLoadError",
    "ReadError",
    "RunConfig",
    "RunReport",
    "RunResult",
    "RunStopped",
    "Scale",
    "ShapeVariations",
    "Smear",
    "SystematicsError",
    "Varied",
    "__version__",
    "fill_varied",
    "load",
    "load_config",
    "load_processor",
    "run",
    "save",
    "weight_variations",
)


def test_public_api_is_pinned():
    assert tuple(sorted(distproc.__all__)) == tuple(sorted(EXPECTED))
    assert tuple(dir(distproc)) == distproc.__all__
    for name in distproc.__all__:
        assert getattr(distproc, name) is not None


def test_every_exception_is_a_distproc_error_and_a_builtin():
    for name in distproc.__all__:
        obj = getattr(distproc, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, distproc.DistprocError)
            builtin_bases = [
                b
                for b in obj.__mro__
                if b.__module__ == "builtins" and b not in (Exception, object, BaseException)
            ]
            assert obj is distproc.DistprocError or builtin_bases, name
