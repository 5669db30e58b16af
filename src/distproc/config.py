"""Configuration: one set of keys for YAML files, keyword arguments and environment variables.

Precedence for a run option: explicit keyword argument (or CLI flag) → run YAML → ``DISTPROC_<KEY>``
environment variable → the defaults shipped in ``distproc/distproc.yaml``. Every value is validated;
unknown keys and wrong types raise :class:`~distproc.exceptions.ConfigError` naming the key, the file
and the closest valid keys.

Paths in a YAML file: the fileset's file paths, ``processor.class``'s file and ``fileset:`` naming a
file resolve against the YAML file's directory. Any other value (``processor.args`` such as
``model_path``) is passed as written, unless tagged ``!path``: ``model_path: !path model.onnx`` becomes
the absolute path of ``model.onnx`` next to the YAML file (``~`` expands; absolute paths and URLs stay).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from distproc.exceptions import ConfigError, format_options
from distproc.reading import SCHEMAS

__all__ = ("RunConfig", "defaults", "load_config", "resolve_run_options", "run_config")

#: Run option → accepted types (``type(None)`` where null is allowed).
_TYPES: dict[str, tuple[type, ...]] = {
    "chunksize": (int,),
    "max_chunks": (int, type(None)),
    "schema": (str,),
    "treename": (str,),
    "split_every": (int,),
    "partitions_per_task": (int, type(None)),
    "retries": (int,),
    "skip_bad_files": (bool, list),
    "verify_checksums": (bool,),
    "cache_dir": (str, type(None)),
    "progress": (bool, type(None)),
    "open_files": (int,),
    "local_reads": (str,),
    "mode": (str,),
    "max_attempts": (int,),
    "no_workers_timeout": (int, float),
}
_MINIMUM = {
    "chunksize": 1,
    "max_chunks": 1,
    "split_every": 2,
    "partitions_per_task": 1,
    "retries": 0,
    "open_files": 0,
    "max_attempts": 1,
    "no_workers_timeout": 1,
}
#: Options with a fixed set of values.
_CHOICES = {"local_reads": ("thread", "fsspec"), "mode": ("partition", "dask")}
#: Keys of a run YAML besides the run options.
_RUN_KEYS = {"processor", "fileset", "cluster", "output"}


def defaults() -> dict[str, Any]:
    """The shipped defaults (``distproc/distproc.yaml``)."""
    text = resources.files("distproc").joinpath("distproc.yaml").read_text()
    return yaml.safe_load(text)


def _check(key: str, value: Any, source: str | None) -> Any:
    types = _TYPES[key]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        msg = f"{key} must be {names}, got {value!r} ({type(value).__name__})"
        raise ConfigError(msg, key=key, source=source)
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        msg = f"{key} must be a list of exception type names (strings), got {value!r}"
        raise ConfigError(msg, key=key, source=source)
    if key in _MINIMUM and value is not None and value < _MINIMUM[key]:
        msg = f"{key} must be at least {_MINIMUM[key]}, got {value!r}"
        raise ConfigError(msg, key=key, source=source)
    if key == "schema" and value.lower() not in SCHEMAS:
        msg = f"unknown schema {value!r}. {format_options(value, SCHEMAS, 'schemas')}"
        raise ConfigError(msg, key=key, source=source)
    if key in _CHOICES and value not in _CHOICES[key]:
        msg = f"{key} must not be {value!r}. {format_options(value, _CHOICES[key], 'values')}"
        raise ConfigError(msg, key=key, source=source)
    return value


def resolve_run_options(**given: Any) -> dict[str, Any]:
    """Resolve every run option: given (non-None) value → ``DISTPROC_<KEY>`` → shipped default.

    Examples
    --------
    >>> from distproc.config import resolve_run_options
    >>> resolve_run_options(chunksize=50_000)["chunksize"]
    50000
    """
    unknown = set(given) - set(_TYPES)
    if unknown:
        key = sorted(unknown)[0]
        msg = f"unknown run option {key!r}. {format_options(key, _TYPES, 'options')}"
        raise ConfigError(msg, key=key)
    base = defaults()
    resolved = {}
    for key in _TYPES:
        value, source = given.get(key), None
        env = os.environ.get(f"DISTPROC_{key.upper()}")
        if value is None and env is not None:
            value, source = yaml.safe_load(env), f"environment variable DISTPROC_{key.upper()}"
        if value is None:
            value = base[key]
        resolved[key] = _check(key, value, source)
    if resolved["progress"] is None:
        resolved["progress"] = sys.stderr.isatty()
    return resolved


@dataclass
class RunConfig:
    """A validated run YAML: processor, fileset, cluster, output and run options."""

    processor: str
    processor_args: dict[str, Any]
    fileset: Mapping[str, Any]
    cluster: Any = None
    output: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    #: Where the fileset's relative paths resolve: the fileset file's directory, or ``base_dir``.
    fileset_dir: Path = field(default_factory=Path.cwd)
    #: Where a relative processor file resolves (``base_dir`` unless given apart from the YAML).
    processor_base: Path | None = None

    def __post_init__(self) -> None:
        if self.processor_base is None:
            self.processor_base = self.base_dir


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` plus the ``!path`` tag: a path relative to the YAML file's directory."""

    def __init__(self, stream: str, base_dir: Path) -> None:
        super().__init__(stream)
        self.base_dir = base_dir


def _construct_path(loader: _Loader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode) or not loader.construct_scalar(node):
        msg = f"!path takes one non-empty string (a file or directory path), at {node.start_mark}"
        raise ConfigError(msg, source=str(node.start_mark.name))
    value = os.path.expanduser(str(loader.construct_scalar(node)))
    if "://" in value or os.path.isabs(value):
        return value
    return str((loader.base_dir / value).resolve())


_Loader.add_constructor("!path", _construct_path)


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as err:
        msg = f"cannot read {what} {path}: {err.strerror}"
        raise ConfigError(msg, source=str(path)) from err
    base_dir = path.parent.resolve()
    try:
        return yaml.load(text, Loader=lambda stream: _Loader(stream, base_dir))  # SafeLoader + !path
    except yaml.YAMLError as err:
        msg = f"{what} is not valid YAML: {err}"
        raise ConfigError(msg, source=str(path)) from err


def _check_cluster(cluster: Mapping[str, Any], source: str) -> None:
    """Validate a ``cluster:`` block's kind and options (``security``, ``protocol``, directories, ...) as
    the back-end will, so a mistake names the file before anything starts; nothing is started here."""
    from distproc.cluster import get_backend

    options = dict(cluster)
    try:
        get_backend(str(options.pop("kind", "local")), **options)
    except ConfigError as err:
        raise ConfigError(str(err), key=err.key, source=source) from err


#: Suffixes of input files given directly as a fileset (``--fileset data.root``).
_DATA_SUFFIXES = (".root", ".parquet")


def _fileset(value: Any, base_dir: Path, source: str | None) -> tuple[Mapping[str, Any], Path]:
    """The fileset mapping of *value* (a mapping, a fileset file, or one input file) and its directory."""
    fileset_dir = base_dir.resolve()
    if isinstance(value, str | os.PathLike):
        fileset_path = base_dir / value
        if fileset_path.suffix in _DATA_SUFFIXES:
            # absolute, but as the user wrote it (not through symlinks): errors then name their path
            return {fileset_path.stem: [os.path.abspath(fileset_path)]}, fileset_dir
        value = _read_yaml(fileset_path, "fileset file")
        fileset_dir = fileset_path.parent.resolve()
    if not isinstance(value, Mapping):
        msg = f"fileset must be a mapping or the path of a YAML/JSON file, got {type(value).__name__}"
        raise ConfigError(msg, key="fileset", source=source)
    return value, fileset_dir


def run_config(
    processor: str, fileset: str | os.PathLike[str] | Mapping[str, Any], **options: Any
) -> RunConfig:
    """A :class:`RunConfig` without a YAML file (``distproc run --processor ... --fileset ...``).

    Relative paths resolve against the current directory.

    Parameters
    ----------
    processor
        ``"path/to/file.py:Class"`` or ``"package.module:Class"``.
    fileset
        A fileset mapping, the path of a YAML/JSON file holding one, or one input file (``.root``,
        ``.parquet``: a dataset named after the file).
    **options
        Run options (see :func:`resolve_run_options`); ``None`` values are left out.

    Examples
    --------
    >>> from distproc.config import run_config
    >>> cfg = run_config("analysis.py:Analysis", "data/dy.root", schema="nanoaod")
    >>> dict(cfg.fileset)["dy"][0].endswith("data/dy.root"), cfg.options
    (True, {'schema': 'nanoaod'})
    """
    fileset_map, fileset_dir = _fileset(fileset, Path.cwd(), None)
    given = {k: v for k, v in options.items() if v is not None}
    resolve_run_options(**given)  # unknown keys and wrong types fail here, naming the option
    return RunConfig(
        processor=processor,
        processor_args={},
        fileset=fileset_map,
        options=given,
        base_dir=Path.cwd(),
        fileset_dir=fileset_dir,
    )


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a run YAML.

    ``processor`` is ``"file.py:Class"`` or ``{class: "file.py:Class", args: {...}}``; ``fileset`` is a
    coffea fileset mapping or the path of a YAML/JSON file holding one; ``cluster`` is a scheduler address
    or ``{kind: ..., ...}``; the run options of :func:`resolve_run_options` may appear at top level.
    Relative paths of the processor file, the fileset file and the fileset's inputs resolve against
    the YAML file's directory, as do values tagged ``!path`` (``model_path: !path model.onnx``).

    Examples
    --------
    >>> from distproc.config import load_config
    >>> cfg = load_config("processors/demo.yaml")  # doctest: +SKIP
    >>> cfg.processor  # doctest: +SKIP
    'demo.py:DemoProcessor'
    """
    path = Path(path)
    source = str(path)
    data = _read_yaml(path, "config file")
    if not isinstance(data, Mapping):
        msg = f"a run config must be a YAML mapping, got {type(data).__name__}"
        raise ConfigError(msg, source=source)
    allowed = _RUN_KEYS | set(_TYPES)
    for key in data:
        if key not in allowed:
            msg = f"unknown key {key!r}. {format_options(str(key), allowed, 'keys')}"
            raise ConfigError(msg, key=str(key), source=source)
    for key in ("processor", "fileset"):
        if key not in data:
            msg_0 = f"missing required key {key!r}"
            raise ConfigError(msg_0, key=key, source=source)

    proc = data["processor"]
    if isinstance(proc, str):
        proc_spec, proc_args = proc, {}
    elif isinstance(proc, Mapping) and set(proc) <= {"class", "args"} and isinstance(proc.get("class"), str):
        proc_spec, proc_args = proc["class"], dict(proc.get("args") or {})
    else:
        msg = "processor must be 'file.py:Class' or {class: 'file.py:Class', args: {...}}"
        raise ConfigError(msg, key="processor", source=source)

    fileset, fileset_dir = _fileset(data["fileset"], path.parent, source)

    cluster = data.get("cluster")
    if cluster is not None and not isinstance(cluster, str | Mapping):
        msg = f"cluster must be a scheduler address or a mapping with 'kind', got {type(cluster).__name__}"
        raise ConfigError(msg, key="cluster", source=source)
    if isinstance(cluster, Mapping):
        _check_cluster(cluster, source)
    options = {k: _check(k, data[k], source) for k in _TYPES if k in data}
    output = data.get("output")
    if output is not None and not isinstance(output, str):
        msg_0 = f"output must be a directory path, got {output!r}"
        raise ConfigError(msg_0, key="output", source=source)
    return RunConfig(
        processor=proc_spec,
        processor_args=proc_args,
        fileset=fileset,
        cluster=dict(cluster) if isinstance(cluster, Mapping) else cluster,
        output=output,
        options=options,
        base_dir=path.parent.resolve(),
        fileset_dir=fileset_dir,
    )
