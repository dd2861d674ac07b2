"""Speed of the analysis layer against straightforward baselines measured in the same run.

1. Refinement and region statistics on a 200 x 200 scan with 50 components:
   ``refine_regions`` + ``region_table`` against the plain scikit-image recipe
   (threshold_yen, measure.label, size filter, regionprops with feret_diameter_max,
   eccentricity, orientation, centroid, equivalent diameter), per component.
2. Cluster mean patterns streamed over a 200 x 200 x 128 x 128 uint16 scan on disk
   (1.3 GB HDF5, read lazily through the engine):
   A. label means: ``mean_patterns`` with one-hot labels against a straightforward
      NumPy loop over scan rows (h5py read, per-label float64 sums);
   B. all 150 clusters (labels + component membership weights + region maps) in one
      pass against the same loop with per-cluster weighted sums, and against the dense
      pass of ``stemnmf.kselect.weighted_mean_patterns`` on the same weights.
   Baselines run on the first 40 rows (8000 patterns; the dense pass on 10 rows);
   figures are patterns per second. Every result is first checked against the loops.
3. The dissimilarity pass over the same scan (all clusters and the per-position map).

Run: ``.venv/bin/python bench/analysis_speed.py [--rows 200] [--rounds 3] [--keep]``.
The machine is shared, so timings are noisy: contenders run interleaved and the best of
the rounds is kept; the file is freshly written and mostly in the page cache for all.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import h5py
import numpy as np
from scipy import ndimage


def _voronoi_weights(sy, sx, k, seed=0):
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, [sy, sx], size=(k, 2))
    yy, xx = np.mgrid[0:sy, 0:sx]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    grain = d.argmin(axis=-1)
    maps = np.stack([ndimage.gaussian_filter((grain == c).astype(np.float32), 1.5) for c in range(k)])
    maps += rng.uniform(0, 0.05, maps.shape).astype(np.float32)
    return maps.astype(np.float32), grain


def _skimage_recipe(maps, min_size=25, step=0.5):
    from skimage.filters import threshold_yen
    from skimage.measure import label, regionprops

    rows = []
    for c, image in enumerate(maps):
        lab = label(image > threshold_yen(image), connectivity=2)
        for prop in regionprops(lab, intensity_image=image):
            if prop.area < min_size:
                continue
            rows.append(
                (c, prop.area, prop.area * step**2, prop.equivalent_diameter_area * step,
                 prop.feret_diameter_max * step, prop.eccentricity, prop.orientation, *prop.centroid,
                 prop.intensity_mean)
            )
    return rows


def bench_regions(rounds=5):
    from stemnmf.analysis import analyze, refine_regions, region_table

    maps, _ = _voronoi_weights(200, 200, 50)
    W = maps.reshape(50, -1).T

    def ours():
        regions = refine_regions(maps)
        return region_table(regions.maps, regions.component, scan_step=0.5)

    n_ours, n_base = len(ours()), len(_skimage_recipe(maps))
    best = _interleaved(
        [("base", lambda: _skimage_recipe(maps)), ("ours", ours),
         ("all", lambda: analyze(W, None, (200, 200), scan_step=0.5))],
        rounds,
    )
    t_base, t_ours, t_all = best["base"], best["ours"], best["all"]
    print("\n1. refinement + region statistics, 200 x 200 scan, 50 components")
    print(f"{'contender (ratio: baseline time / time)':<48}{'regions':>8}{'seconds':>10}{'ratio':>8}")
    print(f"{'scikit-image recipe (baseline)':<48}{n_base:>8}{t_base:>10.3f}{1.0:>8.2f}")
    print(f"{'stemnmf refine_regions + region_table':<48}{n_ours:>8}{t_ours:>10.3f}{t_base / t_ours:>8.2f}")
    print(f"{'stemnmf analyze (maps, overlaps, refine, table)':<48}{n_ours:>8}{t_all:>10.3f}{t_base / t_all:>8.2f}")
    return dict(base=t_base, ours=t_ours, all=t_all)


def _write_scan(path, sy, sx, q, seed=0):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5.attrs["stemnmf_format"] = "scan"
        dset = h5.create_dataset("data", shape=(sy, sx, q, q), dtype=np.uint16, chunks=(1, sx, q, q))
        base = rng.poisson(20, size=(8, sx, q, q)).astype(np.uint16)
        for y in range(sy):
            dset[y] = np.roll(base[y % 8], y, axis=0)


def _numpy_loop(path, labels, k, rows):
    sums = np.zeros((k, 128 * 128), np.float64)
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        for y in range(rows):
            row = data[y].reshape(labels.shape[1], -1).astype(np.float64)
            lab = labels[y]
            for c in np.unique(lab[lab >= 0]):
                sums[c] += row[lab == c].sum(axis=0)
    return sums


def _numpy_loop_weighted(path, weights, sx, rows):
    """Straightforward weighted sums: per scan row, per cluster present in it, w @ its patterns."""
    dense = np.asarray(weights.todense() if hasattr(weights, "todense") else weights)
    sums = np.zeros((dense.shape[1], 128 * 128), np.float64)
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        for y in range(rows):
            x = data[y].reshape(sx, -1).astype(np.float64)
            w = dense[y * sx : (y + 1) * sx]
            for c in np.flatnonzero(w.any(axis=0)):
                idx = np.flatnonzero(w[:, c])
                sums[c] += w[idx, c] @ x[idx]
    return sums


def _interleaved(contenders, rounds):
    """Best time of each contender over ``rounds`` rounds run one after the other (less noise)."""
    best = {name: float("inf") for name, _ in contenders}
    for _ in range(rounds):
        for name, func in contenders:
            t0 = time.perf_counter()
            func()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_patterns(n_rows, keep, rounds):
    from stemnmf.analysis import dissimilarity, mean_patterns, one_hot, presence, refine_regions
    from stemnmf.engine import Engine
    from stemnmf.io import load

    try:
        from stemnmf.kselect import weighted_mean_patterns
    except ImportError:  # not yet exported by the package
        from stemnmf.kselect.patterns import weighted_mean_patterns

    sy, sx, q, k = n_rows, 200, 128, 50
    maps, _ = _voronoi_weights(sy, sx, k, seed=1)
    W = maps.reshape(k, -1).T
    labels = np.argmax(W, axis=1).reshape(sy, sx)
    member = presence(W)
    regions = refine_regions(maps)
    region_w = regions.maps.reshape(regions.n_regions, -1).T
    stacked = np.concatenate([one_hot(labels, k).toarray(), member, region_w], axis=1)
    n_clusters = stacked.shape[1]
    memberships = int(np.count_nonzero(stacked))

    folder = tempfile.mkdtemp(prefix="stemnmf-bench-")
    path = os.path.join(folder, "scan.h5")
    t0 = time.perf_counter()
    _write_scan(path, sy, sx, q)
    t_write = time.perf_counter() - t0
    size = os.path.getsize(path)
    dataset = load(path, lazy=True)
    engine = Engine(memory_budget="1GiB", progress=False)
    n = dataset.n_positions
    rows = min(40, sy)  # baselines run on the first rows; rates are per pattern
    few = min(10, sy)  # the dense pass is slow: fewer rows still
    head = dataset.replace(data=dataset.data[:rows])
    head_few = dataset.replace(data=dataset.data[:few])
    try:
        # correctness first: both streamed results equal the straightforward loops
        sums = _numpy_loop(path, labels, k, rows)
        counts = np.bincount(labels[:rows].ravel(), minlength=k)
        (check, _), = mean_patterns(head, one_hot(labels[:rows], k), engine=engine)
        direct = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 0)
        np.testing.assert_allclose(check.reshape(k, -1), direct, rtol=1e-5)
        wsums = _numpy_loop_weighted(path, stacked, sx, rows)
        head_w = (one_hot(labels[:rows], k), member[: rows * sx], region_w[: rows * sx])
        parts = mean_patterns(head, *head_w, engine=engine)
        totals = stacked[: rows * sx].sum(axis=0)
        ours = np.concatenate([p[0].reshape(p[0].shape[0], -1) for p in parts])
        expect = np.where(totals[:, None] > 0, wsums / np.where(totals > 0, totals, 1)[:, None], 0)
        np.testing.assert_allclose(ours, expect, rtol=1e-5, atol=1e-6)

        outs = mean_patterns(dataset, one_hot(labels, k), member, region_w, engine=engine)
        (hard, _), (weighted, _), (reg_means, _) = outs
        clusters = np.concatenate([member, region_w], axis=1)
        refs = np.concatenate([weighted, reg_means])
        contenders = [
            ("loop_labels", lambda: _numpy_loop(path, labels, k, rows)),
            ("ours_labels", lambda: mean_patterns(dataset, one_hot(labels, k), engine=engine)),
            ("loop_all", lambda: _numpy_loop_weighted(path, stacked, sx, rows)),
            ("dense_all", lambda: weighted_mean_patterns(head_few, stacked[: few * sx], engine=engine)),
            ("ours_all", lambda: mean_patterns(dataset, one_hot(labels, k), member, region_w, engine=engine)),
            ("ours_dissimilarity", lambda: dissimilarity(
                dataset, clusters, refs, labels=labels, label_references=hard, engine=engine)),
        ]
        best = _interleaved(contenders, rounds)
    finally:
        if not keep:
            os.remove(path)
            os.rmdir(folder)

    print(f"\n2. cluster mean patterns, {sy} x {sx} x {q} x {q} uint16 scan on disk "
          f"({size / 1e9:.2f} GB HDF5, chunks of one scan row, written in {t_write:.1f} s, read lazily)")
    print(f"   {k} components, {regions.n_regions} regions: {n_clusters} clusters, {memberships} (position, cluster) "
          f"memberships; engine {engine.n_threads} threads, 1 GiB budget; best of {rounds} interleaved rounds")
    header = "contender (ratio: patterns/s over its baseline)"
    print(f"{header:<62}{'patterns':>9}{'seconds':>9}{'patterns/s':>12}{'ratio':>8}")
    table = [
        ("NumPy loop over rows, label means (baseline A)", rows * sx, best["loop_labels"], "A"),
        ("stemnmf mean_patterns, label means", n, best["ours_labels"], "A"),
        (f"NumPy loop over rows, all {n_clusters} clusters (baseline B)", rows * sx, best["loop_all"], "B"),
        ("kselect.weighted_mean_patterns (dense W), all clusters", few * sx, best["dense_all"], "B"),
        ("stemnmf mean_patterns, all clusters in one pass", n, best["ours_all"], "B"),
        ("stemnmf dissimilarity pass, all clusters + position map", n, best["ours_dissimilarity"], "B"),
    ]
    rate = {"A": rows * sx / best["loop_labels"], "B": rows * sx / best["loop_all"]}
    for name, count, seconds, base in table:
        r = count / seconds
        print(f"{name:<62}{count:>9}{seconds:>9.2f}{r:>12.0f}{r / rate[base]:>8.2f}")
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="scan rows of the on-disk scan (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scan file")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    args = parser.parse_args()
    print(f"stemnmf analysis benchmark; {os.cpu_count()} CPU cores (shared machine: timings are noisy)")
    bench_regions(max(args.rounds, 5))
    bench_patterns(args.rows, args.keep, args.rounds)


if __name__ == "__main__":
    main()
