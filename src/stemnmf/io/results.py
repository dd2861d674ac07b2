"""The results file: one HDF5 file per run, written atomically.

Datasets are addressed by their HDF5 path (``'/components/maps'``); the
layout is the stable contract of DESIGN.md. Root attributes hold the stemnmf
version, the configuration (JSON), the random seed, the input file and its
checksum, and the time of each stage (JSON).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stemnmf import __version__
from stemnmf.errors import ResultsError
from stemnmf.io.files import atomic_output

__all__ = ["Results", "save_results", "load_results", "SCHEMA"]

#: Known datasets: path -> (dimension names, dtype). Dimension names shared
#: between datasets must agree in size.
SCHEMA: dict[str, tuple[tuple[str, ...], str]] = {
    "/components/maps": (("k", "sy", "sx"), "float32"),
    "/components/patterns": (("k", "n_features"), "float32"),
    "/components/peak_agreement": (("k", "k"), "float32"),
    "/components/mean_patterns": (("k", "qy", "qx"), "float32"),
    "/components/representative_patterns": (("k", "qy", "qx"), "float32"),
    "/labels": (("sy", "sx"), "int32"),
    "/overlap/ratio": (("sy", "sx"), "float32"),
    "/overlap/thresholds": (("t",), "float32"),
    "/regions/maps": (("r", "sy", "sx"), "float32"),
    "/regions/table": (("r",), "compound"),
    "/kselect/k": (("n_k",), "int"),
    "/kselect/loss": (("n_k",), "float"),
    "/kselect/chosen_k": ((), "int"),
    "/navigator/patterns": (("ny", "nx", "by", "bx"), "uint8"),
    "/navigator/virtual_bf": (("sy", "sx"), "float32"),
    "/navigator/virtual_df": (("sy", "sx"), "float32"),
}

_JSON_PREFIX = "json:"


def _check_schema(datasets: Mapping[str, np.ndarray]) -> None:
    sizes: dict[str, tuple[int, str]] = {}
    for path, (dims, kind) in SCHEMA.items():
        if path not in datasets:
            continue
        value = np.asarray(datasets[path])
        if value.ndim != len(dims):
            raise ResultsError(f"results dataset {path} must have {len(dims)} dimensions {dims}, got {value.shape}")
        if kind == "compound" and value.dtype.names is None:
            raise ResultsError(f"results dataset {path} must be a table (compound dtype)")
        elif kind == "int" and value.dtype.kind not in "iu":
            raise ResultsError(f"results dataset {path} must hold integers, got {value.dtype}")
        elif kind == "float" and value.dtype.kind != "f":
            raise ResultsError(f"results dataset {path} must hold floats, got {value.dtype}")
        elif kind not in ("compound", "int", "float") and value.dtype != np.dtype(kind):
            raise ResultsError(f"results dataset {path} must be {kind}, got {value.dtype}")
        for dim, size in zip(dims, value.shape):
            if dim in sizes and sizes[dim][0] != size:
                other = sizes[dim][1]
                raise ResultsError(
                    f"results datasets {other} and {path} disagree on {dim}: {sizes[dim][0]} vs {size}"
                )
            sizes.setdefault(dim, (size, path))


def _normalise_path(path: str) -> str:
    return "/" + path.strip("/")


class Results(MutableMapping):
    """The contents of a results file: datasets by HDF5 path and root attributes.

    Parameters
    ----------
    datasets : mapping, optional
        ``{'/components/maps': array, ...}``. Strings and scalars are allowed.
    attrs : mapping, optional
        Root attributes; dicts and lists are stored as JSON.

    Examples
    --------
    >>> r = Results({"/labels": np.zeros((2, 3), np.int32)}, {"seed": 0})
    >>> r["/labels"].shape
    (2, 3)
    """

    def __init__(self, datasets: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None):
        self._datasets: dict[str, Any] = {}
        self.attrs: dict[str, Any] = dict(attrs or {})
        for path, value in (datasets or {}).items():
            self[path] = value

    # -- mapping of datasets -------------------------------------------------------------
    def __getitem__(self, path: str):
        try:
            return self._datasets[_normalise_path(path)]
        except KeyError:
            raise KeyError(f"results have no dataset {path!r}") from None

    def __setitem__(self, path: str, value) -> None:
        self._datasets[_normalise_path(path)] = value

    def __delitem__(self, path: str) -> None:
        del self._datasets[_normalise_path(path)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._datasets))

    def __len__(self) -> int:
        return len(self._datasets)

    def group(self, prefix: str) -> dict[str, Any]:
        """Datasets under ``prefix`` keyed by their path relative to it."""
        prefix = _normalise_path(prefix) + "/"
        return {p[len(prefix) :]: v for p, v in self._datasets.items() if p.startswith(prefix)}

    # -- conveniences for the contract -----------------------------------------------------
    @property
    def maps(self) -> np.ndarray:
        """Component maps (k, sy, sx)."""
        return self["/components/maps"]

    @property
    def patterns(self) -> np.ndarray:
        """Component patterns in feature space (k, n_features)."""
        return self["/components/patterns"]

    @property
    def labels(self) -> np.ndarray:
        """Argmax component per position (sy, sx), -1 where none is significant."""
        return self["/labels"]

    @property
    def n_components(self) -> int:
        return int(self.maps.shape[0])

    @property
    def config(self) -> dict:
        return dict(self.attrs.get("config", {}))

    @property
    def seed(self):
        return self.attrs.get("seed")

    @property
    def timings(self) -> dict:
        return dict(self.attrs.get("timings", {}))

    def __repr__(self) -> str:
        return f"<Results {len(self)} datasets, attrs {sorted(self.attrs)}>"


def _encode_attr(value):
    if isinstance(value, (dict, list, tuple)):
        return _JSON_PREFIX + json.dumps(value, default=_json_default)
    if value is None:
        return _JSON_PREFIX + "null"
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the results attributes")


def _decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith(_JSON_PREFIX):
        return json.loads(value[len(_JSON_PREFIX) :])
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_dataset(h5: h5py.File, path: str, value) -> None:
    if isinstance(value, str):
        h5.create_dataset(path, data=value, dtype=h5py.string_dtype())
        return
    array = np.asarray(value)
    if array.dtype.kind == "U":
        h5.create_dataset(path, data=array.astype(object), dtype=h5py.string_dtype())
        return
    if array.dtype.names is not None:
        fields = []
        for name in array.dtype.names:
            dt = array.dtype[name]
            fields.append((name, h5py.string_dtype() if dt.kind in "UO" else dt))
        table = np.empty(array.shape, dtype=fields)
        for name in array.dtype.names:
            table[name] = array[name].astype(object) if array.dtype[name].kind == "U" else array[name]
        h5.create_dataset(path, data=table)
        return
    options = {}
    if array.size >= 4096:
        options = dict(compression="gzip", compression_opts=4, shuffle=True)
    h5.create_dataset(path, data=array, **options)


def save_results(results: Results, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``results`` to an HDF5 file atomically (temporary name, then rename).

    Raises
    ------
    ResultsError
        If the datasets break the contract of DESIGN.md, or ``path`` exists
        and ``overwrite`` is False.
    """
    _check_schema(results)
    path = Path(path)
    results.attrs.setdefault("stemnmf_version", __version__)
    results.attrs["written"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    attrs = dict(results.attrs)
    with atomic_output(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, value in attrs.items():
                h5.attrs[name] = _encode_attr(value)
            for dataset_path in results:
                _write_dataset(h5, dataset_path, results[dataset_path])
    return path


def _read_dataset(dataset: h5py.Dataset):
    if dataset.dtype.kind == "O" or h5py.check_string_dtype(dataset.dtype) is not None:
        value = dataset.asstr()[()]
        return value if isinstance(value, str) else np.asarray(value, dtype=str)
    value = dataset[()]
    if dataset.dtype.names is not None:
        names = dataset.dtype.names
        if any(h5py.check_string_dtype(dataset.dtype[n]) is not None for n in names):
            decoded = [
                np.asarray([v.decode() if isinstance(v, bytes) else v for v in value[n]], dtype=str)
                if h5py.check_string_dtype(dataset.dtype[n]) is not None
                else value[n]
                for n in names
            ]
            out = np.empty(value.shape, dtype=[(n, d.dtype) for n, d in zip(names, decoded)])
            for n, d in zip(names, decoded):
                out[n] = d
            value = out
    return value


def load_results(path: str | os.PathLike) -> Results:
    """Read a results file written by :func:`save_results`.

    Raises
    ------
    ResultsError
        If the file is missing or is not a stemnmf results file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.h5"
    if not path.exists():
        raise ResultsError(f"no results file at {path}", "run `stemnmf run INPUT -o OUTDIR` first")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ResultsError(f"{path} is not a readable HDF5 results file ({err})") from None
    with h5:
        if "stemnmf_version" not in h5.attrs:
            raise ResultsError(f"{path} is not a stemnmf results file (no stemnmf_version attribute)")
        attrs = {name: _decode_attr(value) for name, value in h5.attrs.items()}
        datasets = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets["/" + name] = _read_dataset(obj)

        h5.visititems(visit)
    return Results(datasets, attrs)
