"""The run: config -> load -> calibrate -> preprocess -> features -> k -> NMF -> analysis -> results -> report.

``stemnmf.run(path_or_dataset, config)`` is the Python twin of ``stemnmf run``.
Each stage is timed; the configuration, seed, version, input and its checksum
are stored with the results. Outputs are written under temporary names and
renamed when complete, so an interrupted run leaves no results.h5.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemnmf import __version__
from stemnmf.config import Config, load_config, parse_k_range
from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError, ResultsError
from stemnmf.io import Dataset4D, Results, file_checksum, load, load_truth, save_results

__all__ = ["run", "RunSummary", "summary_images", "prepare_outdir"]

log = logging.getLogger(__name__)


class _Timer:
    """Times named stages and logs each as it ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("%s done in %.1f s", name, self.seconds[name])


def _as_config(config) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config.validate()
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, Mapping):
        return Config.from_dict(config)
    raise ConfigError(f"cannot use a {type(config).__name__} as a configuration", "give a Config, a dict or a TOML path")


def summary_images(dataset: Dataset4D, engine: Engine | None = None) -> dict[str, np.ndarray]:
    """Mean intensity per position (sy, sx), and the mean and maximum pattern (qy, qx), in one pass.

    When :func:`attach_summary` was called on the same engine and dataset
    before a pass (e.g. the features'), the images come from that pass and
    nothing is read here.
    """
    engine = engine or Engine(progress=False)
    n = dataset.n_positions
    means = attach_summary(dataset, engine)
    totals, peak = engine.reduce(_summary_totals, dataset, combine=["sum", "max"], desc="summary")
    return {
        "/summary/mean_image": means.result().reshape(dataset.scan_shape).astype(np.float32),
        "/summary/mean_pattern": (totals / n).astype(np.float32),
        "/summary/max_pattern": peak.astype(np.float32),
    }


def attach_summary(dataset: Dataset4D, engine: Engine):
    """Let the engine's next pass over ``dataset`` also compute :func:`summary_images` (no pass of its own)."""
    engine.attach(_summary_totals, dataset, combine=["sum", "max"], desc="summary")
    return engine.attach(_summary_means, dataset, mode="map", desc="summary")


def _summary_totals(block, chunk):
    own = block[chunk.own]
    return own.sum(axis=(0, 1), dtype=np.float64), own.max(axis=(0, 1)).astype(np.float64)


def _summary_means(block, chunk):
    own = block[chunk.own]
    return own.mean(axis=(2, 3), dtype=np.float64).reshape(-1)


def attach_vacuum(dataset: Dataset4D, engine: Engine) -> None:
    """Let the engine's next pass over ``dataset`` also compute the analysis' vacuum test (no pass of its own).

    :func:`stemnmf.analysis.vacuum_mask` then finds its scattered fractions
    stored (same kernel, options and dataset); with other options it reads
    the data itself, so the result never depends on this.
    """
    import inspect

    try:
        from stemnmf.analysis.patterns import _scattered_fraction, _valid_pixels, vacuum_mask

        level = inspect.signature(vacuum_mask).parameters["level"].default
    except (ImportError, KeyError):  # the analysis changed: its vacuum test reads the data itself
        log.debug("the vacuum test does not ride along with the features")
        return
    engine.attach(_scattered_fraction, dataset, mode="map", kwargs=dict(valid=_valid_pixels(dataset), level=float(level)),
                  desc="vacuum")


#: Share of the memory budget given to chunks of patterns in flight; the rest is for
#: per-position arrays (features, NMF factors, maps) and their working copies.
CHUNK_SHARE = 0.5


def make_engine(config: Config) -> Engine:
    """The engine of a run: chunks in flight get :data:`CHUNK_SHARE` of ``run.memory_budget``."""
    from stemnmf.engine import parse_bytes

    budget = parse_bytes(config.run.memory_budget)
    return Engine(memory_budget=budget, chunk_share=CHUNK_SHARE, scheduler=config.run.scheduler or None)


@dataclasses.dataclass
class RunSummary:
    """What the one-screen summary at the end of a run says."""

    chosen_k: int
    reason: str
    n_regions: int
    median_feret_nm: float | None
    timings: dict[str, float]
    report: Path | None
    results_path: Path | None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"WARNING:    {w}" for w in self.warnings]
        out += [f"components: k = {self.chosen_k} ({self.reason})", f"regions:    {self.n_regions} refined regions"]
        if self.median_feret_nm is not None:
            out.append(f"grain size: median max Feret diameter {self.median_feret_nm:.2f} nm")
        total = sum(self.timings.values())
        out.append("time:       " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()) + f" (total {total:.1f}s)")
        if self.results_path:
            out.append(f"results:    {self.results_path}")
        if self.report:
            out.append(f"report:     {self.report}")
        return out


def prepare_outdir(outdir: str | os.PathLike, overwrite: bool) -> Path:
    """Create OUTDIR, refusing to mix a new run into an old one unless ``overwrite``."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ResultsError(f"{outdir} exists and is not a folder", "choose another output folder")
    if (outdir / "results.h5").exists() and not overwrite:
        raise ResultsError(f"{outdir} already holds a run (results.h5)", "choose another folder or pass --overwrite")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def run(
    source,
    config=None,
    *,
    outdir: str | os.PathLike | None = None,
    overwrite: bool = False,
    engine: Engine | None = None,
    truth=None,
) -> Results:
    """Run the whole analysis on a scan.

    Parameters
    ----------
    source : path-like, Dataset4D or numpy.ndarray
        The scan: a file or folder that :func:`stemnmf.io.load` reads, a
        Dataset4D, or a 4D array (sy, sx, qy, qx).
    config : Config, dict, path-like or None
        The configuration (defaults where None).
    outdir : path-like, optional
        Write ``results.h5`` (and ``report.html`` unless ``config.run.report``
        is False) there.
    overwrite : bool, default False
        Replace the results of an earlier run in ``outdir``.
    engine : Engine, optional
        Where per-pattern work runs; default from ``config.run``.
    truth : Truth or path-like, optional
        Ground truth to score against; read from a simulated input file by default.

    Returns
    -------
    Results
        Everything the results file holds; ``results.attrs['summary']`` has
        the one-screen summary.
    """
    with contextlib.ExitStack() as cleanup:
        return _run(source, config, outdir=outdir, overwrite=overwrite, engine=engine, truth=truth, cleanup=cleanup)


def _run(source, config, *, outdir, overwrite, engine, truth, cleanup: contextlib.ExitStack) -> Results:
    """The body of :func:`run`; ``cleanup`` removes scratch files and cluster data at the end, whatever happens."""
    config = _as_config(config)
    seed = int(config.run.seed)
    timer = _Timer()
    if outdir is not None:
        outdir = prepare_outdir(outdir, overwrite)
    if engine is None:
        engine = make_engine(config)
        cleanup.callback(engine.close)
    if engine.scheduler is not None:
        _ = engine.client  # connect now: an unreachable scheduler fails before any work

    with timer.stage("load"):
        dataset, input_name, checksum = _load(source, config)
        if truth is None and input_name is not None:
            truth = _truth_from_input(input_name)
        elif truth is not None and not hasattr(truth, "labels"):
            truth = load_truth(truth)
        if isinstance(config.nmf.k, int) and config.nmf.k > dataset.n_positions:
            raise ConfigError(
                f"k={config.nmf.k} is larger than the scan's {dataset.n_positions} positions", "give a smaller --k"
            )

    datasets: dict[str, Any] = {}
    with timer.stage("calibrate"):
        from stemnmf.calibrate import calibrate

        dataset, calibration_report = calibrate(dataset, engine=engine, **config.calibrate.calibrate_options())
        datasets.update(calibration_report.to_results())

    if config.preprocess.method != "none":
        with timer.stage("preprocess"):
            from stemnmf.filters import preprocess

            options = {"rank": config.preprocess.rank} if config.preprocess.method == "lowrank" else {}
            dataset = preprocess(dataset, config.preprocess.method, engine=engine, **options)

    # the summary images and the analysis' vacuum test ride along with the first pass of the features
    attach_summary(dataset, engine)
    attach_vacuum(dataset, engine)
    raw_shape = None
    with timer.stage("features"):
        from stemnmf.features import featurize

        options = config.features.featurize_options()
        spill = _raw_spill(config, dataset, engine, outdir, cleanup)
        if spill is not None:  # raw patterns that do not fit: written to a scratch file, never held whole
            X, description, raw_shape = raw_features_to_file(dataset, spill, engine=engine, **options,
                                                             block_rows=_block_rows(_raw_width(config, dataset),
                                                                                    _budget(config)))
        else:
            X, description = featurize(dataset, config.features.representation, engine=engine, **options)
            _check_resident(X, config)
        datasets.update(description.to_results())

    with timer.stage("summary"):
        datasets.update(summary_images(dataset, engine))

    if config.features.representation == "raw" and raw_shape is None:
        X, raw_shape = raw_features_on_grid(X, description)
    with timer.stage("nmf"):
        X = nmf_input(X, engine, cleanup)
        W, H, kinfo = _factorise(X, config, dataset, raw_shape, engine, seed)
        datasets.update(kinfo)
        datasets["/components/patterns"] = np.asarray(H, dtype=np.float32)

    with timer.stage("analysis"):
        from stemnmf.analysis import analyze

        a = config.analysis
        analysis = analyze(
            W,
            H,
            dataset.scan_shape,
            dataset=dataset,
            feature=config.features.representation,
            pattern_shape=raw_shape,
            scan_step=dataset.calibration.scan_step,
            engine=engine,
            overlap_thresholds=tuple(a.overlap_thresholds),
            refine=None if a.refine == "none" else a.refine,
            min_region_size=a.min_region_size,
            clean=a.clean,
            truth=truth,
        )
        datasets.update(analysis.to_results())
        datasets.update(_cluster_nsd(datasets, dataset.mask))
        if truth is not None:
            datasets["/truth/labels"] = truth.labels

    results = Results(
        datasets,
        {
            "config": config.to_dict(),
            "seed": seed,
            "input": input_name or "(array)",
            "input_checksum": checksum or "",
            "calibration": dataset.calibration.to_dict(),
            "scan_shape": list(dataset.scan_shape),
            "pattern_shape": list(dataset.pattern_shape),
            "stemnmf_version": __version__,
        },
    )
    results_path = report_path = None
    if outdir is not None:
        with timer.stage("save"):
            results.attrs["timings"] = dict(timer.seconds)
            results_path = save_results(results, outdir / "results.h5", overwrite=overwrite)
        if config.run.report:
            with timer.stage("report"):
                from stemnmf.report import write_report

                report_path = write_report(results, outdir / "report.html", overwrite=True)
    results.attrs["timings"] = dict(timer.seconds)
    summary = _summary(results, report_path, results_path)
    results.attrs["summary"] = summary.lines()
    return results


def _load(source, config: Config):
    if isinstance(source, Dataset4D):
        return source, source.source, (file_checksum(source.source) if source.source and Path(str(source.source).split(":/")[0]).exists() else None)
    if isinstance(source, np.ndarray) or (hasattr(source, "shape") and hasattr(source, "dtype")):
        return Dataset4D(source), None, None
    i = config.input
    options = dict(
        scan_step=i.scan_step,
        q_pixel=i.q_pixel,
        beam_energy=i.beam_energy,
        camera_length=i.camera_length,
        convergence_angle=i.convergence_angle,
    )
    if i.scan_shape:
        from stemnmf.cli.options import parse_scan_shape

        options["scan_shape"] = parse_scan_shape(i.scan_shape)
    dataset = load(source, lazy=_lazy_for_budget(source, config), **options)
    return dataset, str(source), file_checksum(source)


def _lazy_for_budget(source, config: Config) -> bool | None:
    """``input.lazy``, or True when unset and the run must not hold the scan whole.

    That is when the run goes to a cluster (each worker then reads its own rows) or the
    file is larger than half the memory budget; otherwise None (load's own rule).
    """
    from stemnmf.engine import parse_bytes

    if config.input.lazy is not None:
        return config.input.lazy
    if config.run.scheduler:
        return True
    path = Path(str(source).split(":/")[0])
    try:
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return None
    if size > parse_bytes(config.run.memory_budget) // 2:
        log.info("%s is larger than half the memory budget (%s); reading it on demand", path, config.run.memory_budget)
        return True
    return None


def _cluster_nsd(datasets: dict, mask) -> dict:
    """NSD (Cao et al.: standard deviation of pixel values about the mean) of each cluster's patterns."""
    from stemnmf.filters import nsd

    rows, names = [], []
    for path, name in (("/components/mean_patterns", "mean pattern"), ("/components/representative_patterns", "representative pattern")):
        patterns = datasets.get(path)
        if patterns is not None and len(patterns):
            same_grid = mask is not None and mask.shape == patterns.shape[1:]
            rows.append(nsd(patterns, mask=mask if same_grid else None))
            names.append(name)
    if not rows:
        return {}
    return {"/analysis/nsd": np.asarray(rows, dtype=np.float32), "/analysis/nsd_labels": np.asarray(names)}


def _truth_from_input(name: str):
    path = Path(str(name).split(":/")[0])
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            has_truth = "truth/labels" in h5
    except OSError:
        return None
    return load_truth(path) if has_truth else None


def _raw_spill(config: Config, dataset: Dataset4D, engine: Engine, outdir, cleanup) -> Path | None:
    """A scratch file for the raw feature matrix when it would not fit the memory budget, else None.

    Holding X in memory costs about three copies while it is built (the
    gathered blocks, the binned grid, the scaled copy); when that exceeds the
    budget's share for per-position arrays, X goes to a scratch HDF5 file
    beside the results (removed at the end of the run) and NMF reads it in
    row blocks.
    """
    if config.features.representation != "raw":
        return None
    from stemnmf.engine import _format_bytes

    nbytes = dataset.n_positions * _raw_width(config, dataset) * 4
    if 3 * nbytes <= _budget(config) * (1 - CHUNK_SHARE):
        return None
    import tempfile

    folder = Path(outdir) if outdir is not None else None
    fd, name = tempfile.mkstemp(prefix=".stemnmf-raw-", suffix=".h5", dir=folder)
    os.close(fd)
    path = Path(name)
    cleanup.callback(lambda: path.unlink(missing_ok=True))
    log.info("raw features (%s) do not fit the memory budget; writing them to %s", _format_bytes(nbytes), path)
    return path


def _check_resident(X, config: Config) -> None:
    """Warn when the feature matrix and its working copies exceed the budget's share for them."""
    from stemnmf.engine import _format_bytes

    share = _budget(config) * (1 - CHUNK_SHARE)
    if 4 * X.nbytes > share:
        log.warning(
            "the feature matrix (%s) and its working copies need more than the %s of the memory budget left "
            "beside the chunks; peak memory may exceed --memory-budget (raise it, or bin the scan)",
            _format_bytes(X.nbytes), _format_bytes(share),
        )


def _budget(config: Config) -> int:
    from stemnmf.engine import parse_bytes

    return parse_bytes(config.run.memory_budget)


def _raw_width(config: Config, dataset: Dataset4D) -> int:
    """Columns of the raw feature matrix on the binned grid."""
    from stemnmf.features.raw import auto_bin

    raw_bin = config.features.raw_bin
    factor = auto_bin(dataset.pattern_shape) if raw_bin == "auto" else int(raw_bin)
    qy, qx = dataset.pattern_shape
    return (qy // factor) * (qx // factor)


class ScaledRows:
    """Rows of a feature matrix on disk, scaled as they are read (picklable, for NMF row blocks).

    ``method`` 'minmax': ``(x - lo) * scale`` clipped to [0, 1] on the columns
    in ``columns`` (others stay 0); 'pattern': each row divided by its maximum.
    """

    def __init__(self, source, method: str, lo=None, scale=None, columns=None):
        self.source = source
        self.method = method
        self.lo, self.scale, self.columns = lo, scale, columns
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows = np.asarray(self.source[key], dtype=np.float32)
        if self.method == "minmax":
            cols = self.columns
            part = (rows[:, cols] - self.lo) * self.scale
            np.clip(part, 0.0, 1.0, out=part)
            rows[:, cols] = part
        elif self.method == "pattern":
            peak = rows.max(axis=1, keepdims=True)
            rows = rows / np.where(peak > 0, peak, 1.0)
        return rows.astype(np.float32, copy=False)


def _raw_grid_kernel(block, chunk, *, factor, mask, transform):
    from stemnmf.features.raw import bin_patterns

    own = block[chunk.own]
    return bin_patterns(own.reshape(-1, *own.shape[2:]), factor, mask, transform=transform, drop_masked=False)


def _block_rows(n_features: int, budget: int) -> int:
    """Rows per NMF row block of a matrix on disk: blocks in flight (2 per thread) and their
    working copies within the budget's share for per-position arrays."""
    from stemnmf.decompose.blocks import BLOCK_BYTES, default_threads

    block_bytes = min(BLOCK_BYTES, budget * (1 - CHUNK_SHARE) / (8 * default_threads()))
    return max(1, int(block_bytes // (4 * max(1, n_features))))


def raw_features_to_file(dataset: Dataset4D, path, *, engine: Engine, scaling: str = "none",
                         block_rows: int | None = None, **options):
    """Raw features written to an HDF5 file in one streamed pass, on the binned grid; never held whole.

    The same values as :func:`stemnmf.featurize` with ``'raw'`` followed by
    :func:`raw_features_on_grid` (masked bins are zero columns).

    block_rows : int, optional
        Rows per row block of the returned X (default about 8 MiB per block).

    Returns
    -------
    X : RowBlocks
        Row blocks over the file (scaled as they are read).
    description : FeatureDescription
        As featurize gives it (``scale_min`` / ``scale_max`` over every position).
    raw_shape : (int, int)
        The binned grid.
    """
    import h5py

    from stemnmf.decompose import RowBlocks
    from stemnmf.features import featurize
    from stemnmf.io.readers.sources import H5Array

    if scaling not in ("none", "minmax", "pattern"):
        raise ConfigError(
            f"scaling {scaling!r} is not available for raw features read from disk (they do not fit the memory budget)",
            "use --scaling none, minmax or pattern, or raise --memory-budget",
        )
    # the description (columns, settings) from one scan row: it does not depend on the values
    _, description = featurize(dataset.row_slice(0, 1), "raw", engine=Engine(progress=False), scaling="none", **options)
    raw = description.settings["raw"]
    shape = tuple(int(v) for v in raw["binned_shape"])
    factor = int(raw["bin"])
    mask = dataset.mask if raw["masked"] else None
    m = shape[0] * shape[1]
    with h5py.File(path, "w") as h5:
        out = h5.create_dataset("X", shape=(dataset.n_positions, m), dtype=np.float32,
                                chunks=(max(1, min(dataset.n_positions, (4 << 20) // (4 * m))), m))
        engine.map(_raw_grid_kernel, dataset, kwargs=dict(factor=factor, mask=mask, transform=raw["transform"]),
                   desc="features: raw", out=out)
    source = H5Array(path, "/X", (dataset.n_positions, m), np.float32, None)
    columns = description.columns
    flat = (columns["qy"] // factor).astype(np.int64) * shape[1] + (columns["qx"] // factor).astype(np.int64)
    lo = np.full(flat.size, np.inf, np.float32)
    hi = np.full(flat.size, -np.inf, np.float32)
    for _, block in RowBlocks(source, block_rows=block_rows):
        np.minimum(lo, block[:, flat].min(axis=0), out=lo)
        np.maximum(hi, block[:, flat].max(axis=0), out=hi)
    description.scale_min, description.scale_max = lo, hi
    description.settings["scaling"] = scaling
    if scaling == "minmax":
        span = (hi - lo).astype(np.float64)
        scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0).astype(np.float32)
        source = ScaledRows(source, "minmax", lo, scale, flat)
    elif scaling == "pattern":
        source = ScaledRows(source, "pattern")
    return RowBlocks(source, block_rows=block_rows), description, shape


def nmf_input(X, engine: Engine, cleanup: contextlib.ExitStack | None = None):
    """X for the NMF: as it is in-process; on a cluster, row blocks persisted on the workers.

    On a cluster (``engine.scheduler``) the iterations then run on the workers
    (:mod:`stemnmf.decompose.distributed`), W row-local, with results equal to
    the in-process ones. A feature matrix in memory is scattered once; one on
    disk is read by each worker from the file (which must be on a shared file
    system).
    """
    if engine.scheduler is None:
        return X
    from stemnmf.decompose import RowBlocks
    from stemnmf.decompose.distributed import DistributedRowBlocks

    # the same row blocks as in-process, so that the results are the same
    source, block_rows = (X._array, X._block_rows) if isinstance(X, RowBlocks) else (X, None)
    blocks = DistributedRowBlocks(source, engine.client, block_rows=block_rows)
    if cleanup is not None:
        cleanup.callback(blocks.release)
    return blocks


def raw_features_on_grid(X: np.ndarray, description) -> tuple[np.ndarray, tuple[int, int]]:
    """Raw features with one column per bin of the binned detector, and that grid's shape.

    Featurizing drops bins that are wholly masked; they come back as zero
    columns, so that a row of H reshapes to a pattern.
    """
    raw = description.settings["raw"]
    shape = tuple(int(v) for v in raw["binned_shape"])
    if X.shape[1] == shape[0] * shape[1]:
        return X, shape
    columns = description.columns
    factor = float(raw["bin"])
    flat = (columns["qy"] // factor).astype(np.int64) * shape[1] + (columns["qx"] // factor).astype(np.int64)
    full = np.zeros((X.shape[0], shape[0] * shape[1]), dtype=X.dtype)
    full[:, flat] = X
    return full, shape


def _factorise(X, config: Config, dataset, raw_shape, engine, seed):
    """(W, H, results datasets) for the configured choice of k."""
    from stemnmf.decompose import NMF, IterativeNMF

    n = config.nmf
    feature = config.features.representation
    method = n.method(feature)
    if method == "auto":
        from stemnmf.kselect import select_k

        low, high = parse_k_range(n.k_range)
        if high > min(X.shape) - 1:
            log.warning(
                "k range %d:%d reaches beyond what a %d x %d feature matrix allows; scanning k = %d..%d",
                low, high, X.shape[0], X.shape[1], low, min(X.shape) - 1,
            )
            high = min(X.shape) - 1
        if high < low:
            raise DataValueError(
                f"the scan has too few positions or features ({X.shape}) for k from {low}",
                "give a smaller --k-range or a fixed --k",
            )
        selection = select_k(
            X,
            k_values=range(low, high + 1),
            dataset=dataset,
            feature=feature,
            pattern_shape=raw_shape,
            engine=engine,
            random_state=seed,
            solver=n.solver,
            max_iter=n.max_iter,
            tol=n.tol,
        )
        W, H = selection.components(selection.chosen_k)
        return W, H, selection.to_results()
    if method == "iterative":
        model = IterativeNMF(
            merge_threshold=n.merge_threshold,
            feature=feature.split("+")[0],
            n_restarts=n.n_restarts,
            scree_factor=n.scree_factor,
            solver=n.solver,
            max_iter=n.max_iter,
            tol=n.tol,
            random_state=seed,
        )
        W = model.fit_transform(X)
        return W, model.components_, model.to_results()
    k = int(method)
    if k > min(X.shape):
        raise ConfigError(f"k={k} is larger than the data allows (min of {X.shape})", "give a smaller --k")
    model = NMF(k, solver=n.solver, max_iter=n.max_iter, tol=n.tol, random_state=seed, init="nndsvda")
    W = model.fit_transform(X)
    return W, model.components_, {
        "/kselect/chosen_k": np.int64(k),
        "/kselect/reason": f"k = {k} given by the user",
    }


def _summary(results: Results, report_path, results_path) -> RunSummary:
    chosen = int(results["/kselect/chosen_k"]) if "/kselect/chosen_k" in results else results.n_components
    reason = str(results["/kselect/reason"]) if "/kselect/reason" in results else ""
    table = results["/regions/table"] if "/regions/table" in results else np.zeros(0, [("max_feret_nm", "f4")])
    median = float(np.median(table["max_feret_nm"])) if len(table) and "max_feret_nm" in table.dtype.names else None
    warnings = []
    if "/calibration/quality/reliable" in results and not int(results["/calibration/quality/reliable"]):
        problems = [str(p) for p in np.atleast_1d(results["/calibration/quality/problems"])]
        warnings.append("CALIBRATION UNRELIABLE, the maps may be meaningless: " + "; ".join(problems))
    return RunSummary(chosen, reason, len(table), median, dict(results.timings), report_path, results_path, warnings)
