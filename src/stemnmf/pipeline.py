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
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemnmf import __version__
from stemnmf.analysis import analyze, attach_vacuum_test
from stemnmf.calibrate import calibrate
from stemnmf.config import Config, load_config, parse_k_range
from stemnmf.crystal import load_phases, orientation_datasets
from stemnmf.decompose import NMF, IterativeNMF, RowBlocks
from stemnmf.decompose.blocks import BLOCK_BYTES, default_threads
from stemnmf.decompose.prune import MIN_COHERENCE
from stemnmf.engine import Engine, format_bytes, parse_bytes
from stemnmf.errors import ConfigError, DataValueError, ResultsError
from stemnmf.features import featurize
from stemnmf.features.raw_file import raw_features_on_grid, raw_features_to_file, raw_width
from stemnmf.filters import nsd, preprocess
from stemnmf.io import (
    Dataset4D,
    InputFile,
    Results,
    attach_summary,
    inspect_input,
    load,
    load_truth,
    save_results,
    split_input_path,
    summary_images,
)
from stemnmf.io.navigator import NAVIGATOR_BUDGET, attach_navigator
from stemnmf.kselect import select_k, votes_line
from stemnmf.report import write_report
from stemnmf.report.warnings import run_warnings

__all__ = ["run", "RunSummary", "prepare_outdir"]

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


def attach_vacuum(dataset: Dataset4D, engine: Engine) -> None:
    """Let the engine's next pass over ``dataset`` also compute the analysis' vacuum test (no pass of its own)."""
    attach_vacuum_test(dataset, engine)


#: Share of the memory budget given to chunks of patterns in flight; the rest is for
#: per-position arrays (features, NMF factors, maps) and their working copies.
CHUNK_SHARE = 0.5


def make_engine(config: Config) -> Engine:
    """The engine of a run: chunks in flight get :data:`CHUNK_SHARE` of ``run.memory_budget``."""
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
    k_evidence: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"WARNING:    {w}" for w in self.warnings]
        out += [f"components: k = {self.chosen_k} ({self.reason})", f"regions:    {self.n_regions} refined regions"]
        if self.k_evidence:
            out.insert(len(self.warnings) + 1, f"k votes:    {self.k_evidence}")
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
    if config.orientations.phases:  # a missing extra or a bad CIF fails now, not after the factorisation
        load_phases(config.orientations.phases)
    timer = _Timer()
    if outdir is not None:
        outdir = prepare_outdir(outdir, overwrite)
    engine = _start_engine(engine, config, cleanup)
    with timer.stage("load"):
        dataset, found, truth = _load_input(source, config, truth)
    datasets: dict[str, Any] = {}
    with timer.stage("calibrate"):
        dataset, calibration_report = calibrate(dataset, engine=engine, **config.calibrate.calibrate_options())
        datasets.update(calibration_report.to_results())
    if config.preprocess.method != "none":
        with timer.stage("preprocess"):
            options = {"rank": config.preprocess.rank} if config.preprocess.method == "lowrank" else {}
            dataset = preprocess(dataset, config.preprocess.method, engine=engine, **options)
    # the summary images and the analysis' vacuum test ride along with the first pass of the features
    attach_summary(dataset, engine)
    attach_vacuum(dataset, engine)
    navigator = attach_navigator(dataset, engine, origin=datasets.get("/calibration/origin"),  # the report's explorer
                                 probe_radius=datasets.get("/calibration/probe_radius"),
                                 budget=min(NAVIGATOR_BUDGET, _budget(config) // 16))
    with timer.stage("features"):
        X, raw_shape = _features(dataset, config, engine, outdir, cleanup, datasets)
    with timer.stage("summary"):
        datasets.update(summary_images(dataset, engine))
        datasets.update(navigator())
    with timer.stage("nmf"):
        if engine.scheduler is not None:  # row blocks persisted on the workers, where the iterations run
            from stemnmf.decompose.distributed import nmf_input  # dask.distributed: only for a cluster run

            X = nmf_input(X, engine, cleanup)
        W, H, kinfo = _factorise(X, config, dataset, raw_shape, engine, seed)
        datasets.update(kinfo)
        datasets["/components/patterns"] = np.asarray(H, dtype=np.float32)
    with timer.stage("analysis"):
        datasets.update(_analyze(W, H, dataset, raw_shape, config, engine, truth,
                                 agreement=datasets.get("/components/peak_agreement")))
    if config.orientations.phases:
        with timer.stage("orientations"):
            datasets.update(_orientations(datasets, dataset, config))
    results = Results(datasets, _run_attrs(config, dataset, found))
    return _save(results, config, outdir, overwrite, timer)


def _start_engine(engine: Engine | None, config: Config, cleanup: contextlib.ExitStack) -> Engine:
    """The run's engine (made from the config when not given, and closed at the end); a cluster is reached now."""
    if engine is None:
        engine = make_engine(config)
        cleanup.callback(engine.close)
    if engine.scheduler is not None:
        _ = engine.client  # connect now: an unreachable scheduler fails before any work
    return engine


def _load_input(source, config: Config, truth):
    """(dataset, InputFile or None, truth or None) of the run's input; a k larger than the scan fails here."""
    dataset, found = _load(source, config)
    if truth is None and found is not None and found.has_truth:
        truth = load_truth(found.path)
    elif truth is not None and not hasattr(truth, "labels"):
        truth = load_truth(truth)
    if isinstance(config.nmf.k, int) and config.nmf.k > dataset.n_positions:
        raise ConfigError(
            f"k={config.nmf.k} is larger than the scan's {dataset.n_positions} positions", "give a smaller --k"
        )
    return dataset, found, truth


def _features(dataset: Dataset4D, config: Config, engine: Engine, outdir, cleanup, datasets: dict):
    """(X, raw pattern shape or None): the feature matrix, in memory or in row blocks of a scratch file."""
    options = config.features.featurize_options()
    spill = _raw_spill(config, dataset, engine, outdir, cleanup)
    if spill is not None:  # raw patterns that do not fit: written to a scratch file, never held whole
        block_rows = _block_rows(raw_width(dataset.pattern_shape, config.features.raw_bin), _budget(config))
        rows, description, raw_shape = raw_features_to_file(dataset, spill, engine=engine, **options,
                                                            block_rows=block_rows)
        datasets.update(description.to_results())
        return RowBlocks(rows, block_rows=block_rows), raw_shape
    X, description = featurize(dataset, config.features.representation, engine=engine, **options)
    _check_resident(X, config)
    datasets.update(description.to_results())
    if config.features.representation == "raw":
        return raw_features_on_grid(X, description)
    return X, None


def _analyze(W, H, dataset: Dataset4D, raw_shape, config: Config, engine: Engine, truth, agreement=None) -> dict:
    """The /analysis, /regions and /components datasets of the factorisation (``agreement``: the
    components' same-grain evidence, when the factorisation gave it)."""
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
        peak_agreement=agreement,
        region_agreement=a.region_agreement if a.region_merge else None,
        fragment_size=a.fragment_size,
        peak_split=a.split_agreement if a.region_split else None,
        absorb=a.absorb,
    )
    datasets = analysis.to_results()
    datasets.update(_cluster_nsd(datasets, dataset.mask))
    if truth is not None:
        datasets["/truth/labels"] = truth.labels
    return datasets


def _run_attrs(config: Config, dataset: Dataset4D, found: InputFile | None) -> dict:
    """What a run records: configuration, seed, version, input and its checksum, calibration, shapes."""
    return {
        "config": config.to_dict(),
        "seed": int(config.run.seed),
        "input": "(array)" if found is None else found.name,
        "input_checksum": "" if found is None else found.checksum(),
        "calibration": dataset.calibration.to_dict(),
        "scan_shape": list(dataset.scan_shape),
        "pattern_shape": list(dataset.pattern_shape),
        "stemnmf_version": __version__,
    }


def _save(results: Results, config: Config, outdir: Path | None, overwrite: bool, timer: _Timer) -> Results:
    """Write results.h5 (and the report) when there is an outdir; attach the timings and the summary."""
    results_path = report_path = None
    if outdir is not None:
        with timer.stage("save"):
            results.attrs["timings"] = dict(timer.seconds)
            results_path = save_results(results, outdir / "results.h5", overwrite=overwrite)
        if config.run.report:
            with timer.stage("report"):
                report_path = write_report(results, outdir / "report.html", overwrite=True)
    results.attrs["timings"] = dict(timer.seconds)
    summary = _summary(results, report_path, results_path)
    results.attrs["summary"] = summary.lines()
    return results


def _orientations(datasets: dict, dataset: Dataset4D, config: Config) -> dict:
    """The /orientations datasets of the run's components and regions (crystal extra)."""
    o = config.orientations
    analysis = Results(datasets, {"calibration": dataset.calibration.to_dict()})
    return orientation_datasets(analysis, o.phases, dataset=dataset, per_position=o.per_position, **o.index_options())


def _load(source, config: Config):
    """(dataset, InputFile or None) of what the run was given: a path, a Dataset4D or an array."""
    if isinstance(source, Dataset4D):
        known = source.source and split_input_path(source.source)[0].exists()
        return source, (inspect_input(source.source) if known else None)
    if isinstance(source, np.ndarray) or (hasattr(source, "shape") and hasattr(source, "dtype")):
        return Dataset4D(source), None
    found = inspect_input(source)
    return load(source, lazy=_lazy_for_budget(found, config), **config.input.load_options()), found


def _lazy_for_budget(found: InputFile, config: Config) -> bool | None:
    """``input.lazy``, or True when unset and the run must not hold the scan whole.

    That is when the run goes to a cluster (each worker then reads its own rows) or the
    file is larger than half the memory budget; otherwise None (load's own rule).
    """
    if config.input.lazy is not None:
        return config.input.lazy
    if config.run.scheduler:
        return True
    if found.size > parse_bytes(config.run.memory_budget) // 2:
        log.info("%s is larger than half the memory budget (%s); reading it on demand", found.path,
                 config.run.memory_budget)
        return True
    return None


def _cluster_nsd(datasets: dict, mask) -> dict:
    """NSD (Cao et al.: standard deviation of pixel values about the mean) of each cluster's patterns."""
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
    nbytes = dataset.n_positions * raw_width(dataset.pattern_shape, config.features.raw_bin) * 4
    if 3 * nbytes <= _budget(config) * (1 - CHUNK_SHARE):
        return None
    folder = Path(outdir) if outdir is not None else None
    fd, name = tempfile.mkstemp(prefix=".stemnmf-raw-", suffix=".h5", dir=folder)
    os.close(fd)
    path = Path(name)
    cleanup.callback(lambda: path.unlink(missing_ok=True))
    log.info("raw features (%s) do not fit the memory budget; writing them to %s", format_bytes(nbytes), path)
    return path


def _check_resident(X, config: Config) -> None:
    """Warn when the feature matrix and its working copies exceed the budget's share for them."""
    share = _budget(config) * (1 - CHUNK_SHARE)
    if 4 * X.nbytes > share:
        log.warning(
            "the feature matrix (%s) and its working copies need more than the %s of the memory budget left "
            "beside the chunks; peak memory may exceed --memory-budget (raise it, or bin the scan)",
            format_bytes(X.nbytes), format_bytes(share),
        )


def _budget(config: Config) -> int:
    return parse_bytes(config.run.memory_budget)


def _block_rows(n_features: int, budget: int) -> int:
    """Rows per NMF row block of a matrix on disk: blocks in flight (2 per thread) and their
    working copies within the budget's share for per-position arrays."""
    block_bytes = min(BLOCK_BYTES, budget * (1 - CHUNK_SHARE) / (8 * default_threads()))
    return max(1, int(block_bytes // (4 * max(1, n_features))))


def _factorise(X, config: Config, dataset, raw_shape, engine, seed):
    """(W, H, results datasets) for the configured choice of k."""
    n = config.nmf
    feature = config.features.representation
    method = n.method(feature)
    if method == "auto":
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
            solver="compressed" if n.k_scan == "compressed" else n.solver,
            max_iter=n.max_iter,
            tol=n.tol,
            evidence=n.k_evidence,
        )
        W, H = selection.components(selection.chosen_k)
        if n.k_scan == "compressed" and n.solver != "compressed":  # the scan fitted Q B: refine on X itself
            model = NMF(selection.chosen_k, solver=n.solver, init="custom", max_iter=n.max_iter, tol=n.tol, random_state=seed)
            W, H = model.fit_transform(X, W=W, H=H), model.components_
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
            scan_shape=tuple(dataset.scan_shape) if len(dataset.scan_shape) == 2 else None,
            min_coherence=MIN_COHERENCE if n.drop_incoherent else None,
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
    votes = votes_line(results)
    return RunSummary(chosen, reason, len(table), median, dict(results.timings), report_path, results_path, votes,
                      run_warnings(results))
