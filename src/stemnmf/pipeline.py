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
    """Mean intensity per position (sy, sx), and the mean and maximum pattern (qy, qx), in one pass."""
    engine = engine or Engine(progress=False)
    n = dataset.n_positions

    totals, peak, per_position = engine.reduce(
        _summary_chunk, dataset, combine=["sum", "max", "sum"], kwargs={"n_positions": n}, desc="summary"
    )
    return {
        "/summary/mean_image": per_position.reshape(dataset.scan_shape).astype(np.float32),
        "/summary/mean_pattern": (totals / n).astype(np.float32),
        "/summary/max_pattern": peak.astype(np.float32),
    }


def _summary_chunk(block, chunk, n_positions):
    own = block[chunk.own]
    per_position = np.zeros(n_positions, np.float64)
    per_position[chunk.positions] = own.mean(axis=(2, 3), dtype=np.float64).ravel()
    return own.sum(axis=(0, 1), dtype=np.float64), own.max(axis=(0, 1)).astype(np.float64), per_position


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

    def lines(self) -> list[str]:
        out = [f"components: k = {self.chosen_k} ({self.reason})", f"regions:    {self.n_regions} refined regions"]
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
    config = _as_config(config)
    seed = int(config.run.seed)
    timer = _Timer()
    if outdir is not None:
        outdir = prepare_outdir(outdir, overwrite)
    engine = engine or Engine(memory_budget=config.run.memory_budget, scheduler=config.run.scheduler)

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

        c = config.calibrate
        beam_stop = None if c.beam_stop == "none" else c.beam_stop
        if beam_stop not in (None, "auto"):
            beam_stop = np.load(beam_stop)
        dataset, calibration_report = calibrate(
            dataset,
            engine=engine,
            hot_pixels=c.hot_pixels,
            hot_pixel_threshold=c.hot_pixel_threshold,
            bin_q=c.bin_q,
            bin_scan=c.bin_scan,
            origin=None if c.origin == "none" else c.origin,
            origin_fit=None if c.origin_fit == "none" else c.origin_fit,
            correct_shift=c.correct_shift,
            ellipse=c.ellipse,
            beam_stop=beam_stop,
            edge_pixels=c.edge_pixels,
        )
        datasets.update(calibration_report.to_results())

    if config.preprocess.method != "none":
        with timer.stage("preprocess"):
            from stemnmf.filters import preprocess

            options = {"rank": config.preprocess.rank} if config.preprocess.method == "lowrank" else {}
            dataset = preprocess(dataset, config.preprocess.method, engine=engine, **options)

    with timer.stage("summary"):
        datasets.update(summary_images(dataset, engine))

    with timer.stage("features"):
        from stemnmf.features import featurize

        X, description = featurize(
            dataset, config.features.representation, engine=engine, **config.features.featurize_options()
        )
        datasets.update(description.to_results())

    raw_shape = None
    if config.features.representation == "raw":
        X, raw_shape = raw_features_on_grid(X, description)
    with timer.stage("nmf"):
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
    dataset = load(source, lazy=i.lazy, **options)
    return dataset, str(source), file_checksum(source)


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
    if n.k == "auto":
        from stemnmf.kselect import select_k

        low, high = parse_k_range(n.k_range)
        high = min(high, min(X.shape) - 1)
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
    if n.k == "iterative":
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
    k = int(n.k)
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
    return RunSummary(chosen, reason, len(table), median, dict(results.timings), report_path, results_path)
