"""Size and first paint of the report with its explorer, against the report without it (same process).

A results file is built synthetically at the issue's geometry (100 x 100
positions, 256 x 256 detector; no pipeline run): k components on a Voronoi
grain map with soft borders (so that overlaps exist), each with its own
256 x 256 pattern (direct beam and Gaussian disks); each position's pattern
is the weighted sum of its components' patterns at a dose of ``--dose``
electrons per pattern with Poisson noise, drawn directly on the navigator's
binned grid (binning commutes with the sum). The navigator stack then goes
through :func:`stemnmf.io.navigator.navigator_results` as the pipeline's
does, with the size rule of :func:`~stemnmf.io.navigator.navigator_geometry`.
Static figures come from the same file (k-selection, components, clusters,
regions, ground truth), as a run writes them. As in a BD run, the file holds
the disks found at every position (``/features/bd/disks``, written by
:meth:`stemnmf.features.FeatureDescription.to_results`): those of the
position's strongest component (its direct beam and 20-40 disks), moved by
0.3 px (s.d.), strongest first.

Each report is opened ``--rounds`` times in a fresh headless Chromium page
(file://); reported: file size, the time to write it, first contentful
paint (performance 'paint' entry) and the time the explorer has drawn its
first map and pattern ('stemnmf-explorer-ready' mark), both from navigation
start; the best of the rounds is kept (the machine is shared).

Run: ``.venv/bin/python bench/report_size.py [--scan 100 256] [--rounds 3] [--seed 11]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stemnmf.features import FeatureDescription
from stemnmf.io import Results, save_results
from stemnmf.io.navigator import bin_pattern_stack, navigator_geometry, navigator_results, quantise_log
from stemnmf.report import write_report


def component_patterns(k: int, q: int, rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """(k, q, q) float32: a direct beam and 20-40 Gaussian disks each, summing to 1; and each one's disks (m, 3) qy, qx, height."""
    yy, xx = np.mgrid[:q, :q].astype(np.float32)
    centre = (q - 1) / 2
    out = np.zeros((k, q, q), np.float32)
    disks = []
    for i in range(k):
        image = 4 * np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * (q / 60) ** 2))
        found = [(centre, centre, 4.0)]
        for _ in range(rng.integers(20, 41)):
            cy, cx = centre + rng.uniform(-0.42, 0.42, 2) * q
            height = rng.uniform(0.05, 1)
            image += height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (q / 90) ** 2))
            found.append((cy, cx, height))
        out[i] = image / image.sum()
        found = np.array(found)
        disks.append(found[np.argsort(-found[:, 2], kind="stable")])
    return out, disks


def found_disks(labels: np.ndarray, component_disks: list[np.ndarray], rng) -> dict:
    """``/features/bd/disks*`` of a BD run finding, at each position, its component's disks moved by 0.3 px."""
    most = max(len(d) for d in component_disks)
    disks = np.full((labels.size, most, 3), np.nan, np.float32)
    for i, label in enumerate(labels.ravel()):
        own = component_disks[label]
        disks[i, : len(own), :2] = own[:, :2] + rng.normal(0, 0.3, (len(own), 2))
        disks[i, : len(own), 2] = own[:, 2]
    description = FeatureDescription("bd", np.zeros(0, dtype=[("representation", "U8")]), {}, np.zeros(0),
                                     np.zeros(0), np.zeros(2), disks=disks, n_disks=np.zeros(labels.shape, np.int32))
    return {path: v for path, v in description.to_results().items() if path.startswith("/features/bd/disks")}


def synthetic_results(n: int, q: int, k: int, dose: float, seed: int) -> Results:
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, n, size=(k, 2))
    yy, xx = np.mgrid[:n, :n]
    distance = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    weights = np.exp(-(distance - distance.min(axis=-1, keepdims=True)) / 1.5).astype(np.float32)  # soft borders
    weights /= weights.sum(axis=-1, keepdims=True)
    labels = weights.argmax(axis=-1).astype(np.int32)
    top2 = np.sort(weights, axis=-1)[..., -2:]
    patterns, component_disks = component_patterns(k, q, rng)
    factor, stride = navigator_geometry((n, n), (q, q))
    binned = bin_pattern_stack(patterns, factor)  # (k, b, b), mean per bin
    kept = weights[::stride, ::stride].reshape(-1, k)
    mean_counts = dose * np.einsum("nk,kij->nij", kept, binned) * factor**2  # electrons per bin
    stack = rng.poisson(mean_counts).astype(np.float32) / factor**2  # per detector pixel, as the pipeline bins
    bf_mask = np.zeros((q, q), np.float32)
    c = (q - 1) / 2
    r = np.hypot(*np.mgrid[:q, :q] - c)
    bf_mask[r <= q / 50] = 1
    df_mask = ((r >= q / 25) & (r <= 0.47 * q)).astype(np.float32)
    bf = dose * weights @ np.einsum("kij,ij->k", patterns, bf_mask)
    df = dose * weights @ np.einsum("kij,ij->k", patterns, df_mask)
    codes, scale = quantise_log(stack)
    nav = navigator_results(np.arange(len(stack)), codes, scale, bf, df, factor=factor, stride=stride,
                            geometry={"origin": [c, c], "bf_radius": q / 50, "df_inner": q / 25, "df_outer": 0.47 * q},
                            scan_shape=(n, n))
    maps = np.moveaxis(weights, -1, 0)
    region_labels = labels.copy()
    table = np.zeros(k, dtype=[("region", "i4"), ("component", "i4"), ("area_nm2", "f4"), ("max_feret_nm", "f4"),
                               ("dissimilarity", "f4")])
    table["region"] = table["component"] = np.arange(k)
    table["area_nm2"] = np.bincount(labels.ravel(), minlength=k) * 0.25
    table["max_feret_nm"] = rng.uniform(5, 40, k)
    table["dissimilarity"] = rng.uniform(0, 0.01, k)
    ks = np.arange(max(2, k - 8), k + 9)
    datasets = {
        "/components/maps": maps,
        "/components/mean_patterns": patterns * dose,
        "/components/representative_patterns": patterns * dose * 0.9,
        "/labels": labels,
        "/overlap/ratio": (top2[..., 0] / top2[..., 1]).astype(np.float32),
        "/overlap/thresholds": np.array([0.75, 0.8, 0.85, 0.9, 0.95], np.float32),
        "/regions/labels": region_labels,
        "/regions/maps": maps * (labels[None] == np.arange(k)[:, None, None]),
        "/regions/table": table,
        "/summary/mean_image": (bf + df).astype(np.float32) / q**2,
        "/summary/max_pattern": patterns.max(axis=0) * dose,
        "/kselect/k": ks,
        "/kselect/loss": 1.0 / ks,
        "/kselect/chosen_k": np.int64(k),
        "/kselect/range_k": np.arange(k - 2, k + 3),
        "/truth/labels": (labels[None] == np.arange(k)[:, None, None]).astype(np.uint8),
        **nav,
        **found_disks(labels, component_disks, rng),
    }
    for kk in range(k - 2, k + 3):
        datasets[f"/kselect/patterns/{kk}"] = np.concatenate([patterns, patterns])[:kk] * dose
    return Results(datasets, {"seed": seed, "input": f"synthetic {n}x{n}x{q}x{q}", "scan_shape": [n, n],
                              "pattern_shape": [q, q]})


def open_times(path: Path, rounds: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(flag)
    best = {"fcp_ms": np.inf, "explorer_ms": np.inf, "load_ms": np.inf}
    for _ in range(rounds):
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(path.as_uri())
            for _ in range(200):
                values = driver.execute_script(
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    "const e = performance.getEntriesByName('stemnmf-explorer-ready')[0];"
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return [p ? p.startTime : null, e ? e.startTime : null, n ? n.loadEventEnd : null];")
                if values[0] is not None and values[2]:
                    break
                time.sleep(0.05)
        finally:
            driver.quit()
        for key, value in zip(best, values):
            if value is not None:
                best[key] = min(best[key], float(value))
    return {key: (None if not np.isfinite(v) else round(v)) for key, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=int, nargs="+", default=[100, 256])
    parser.add_argument("--det", type=int, default=256)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dose", type=float, default=2e5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemnmf-report-bench-") as tmp:
        for n in args.scan:
            folder = Path(tmp) / f"scan{n}"
            folder.mkdir()
            results = synthetic_results(n, args.det, args.k, args.dose, args.seed)
            save_results(results, folder / "results.h5")
            row = {"scan": f"{n}x{n}x{args.det}^2", "navigator": list(results["/navigator/patterns"].shape),
                   "stride": int(results["/navigator/stride"])}
            for name, explorer in (("static", False), ("explorer", True)):
                start = time.perf_counter()
                path = write_report(folder, folder / f"{name}.html", explorer=explorer)
                row[f"{name}_write_s"] = round(time.perf_counter() - start, 1)
                row[f"{name}_MB"] = round(path.stat().st_size / 1e6, 2)
                row[f"{name}_open"] = open_times(path, args.rounds)
            row["size_ratio"] = round(row["explorer_MB"] / row["static_MB"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| scan | navigator stack (stride) | report MB (static only) | ratio | first paint ms (static) | explorer ready ms | write s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scan']} | {' x '.join(map(str, r['navigator']))} ({r['stride']}) | {r['explorer_MB']} ({r['static_MB']}) | "
              f"{r['size_ratio']} | {r['explorer_open']['fcp_ms']} ({r['static_open']['fcp_ms']}) | "
              f"{r['explorer_open']['explorer_ms']} | {r['explorer_write_s']} ({r['static_write_s']}) |")


if __name__ == "__main__":
    main()
