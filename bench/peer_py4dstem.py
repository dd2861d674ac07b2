"""py4DSTEM 0.14.18's ``Featurization`` (iterative NMF + Yen regions) on the simulated Ag films, scored by stemnmf.

    PYTHONPATH=src .venv/bin/python bench/peer_py4dstem.py --films ag1,ag2,ag3 --seed 1 --dir /tmp/i16/paper
        [--features aa,bd,binned] [--models 10] [--max-components 50] [--max-iterations 10]
        [--peer-python /work/peers/py4dstem/bin/python] [--scan N --det N]

An optional baseline: py4DSTEM (GPL) is never imported here; it runs in its own
virtual environment (bench/peers/README.md) through
``bench/peers/py4dstem_featurize.py`` in a subprocess. For each film (the
paper-geometry films of ``stemnmf simulate``, reused from ``--dir`` when there;
``--scan``/``--det`` make a small film for development) the features are

* ``aa``, ``bd``: stemnmf's own features, unscaled (the same calibration and
  features as bench/grain_finding.py), handed to py4DSTEM, which min-max scales
  them and merges at the paper's threshold (AA 0.45, BD 0.2);
* ``binned``: the patterns binned 8 x 8 and flattened, built in the peer
  environment (py4DSTEM's own kind of feature), merge threshold 0.45.

py4DSTEM's regions (``spatially_separated_ims``) are scored against the truth
with stemnmf's :func:`stemnmf.analysis.score_clusters`, region labels the
argmax of the region maps. Prints one Markdown row per film and feature with
the columns of bench/grain_finding.py.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis.scores import score_clusters  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402
from stemnmf.simulate import simulate_to_file  # noqa: E402

log = logging.getLogger("peer_py4dstem")
PEER_SCRIPT = Path(__file__).parent / "peers" / "py4dstem_featurize.py"
MERGE_THRESHOLDS = {"aa": 0.45, "bd": 0.2, "binned": 0.45}
BIN = 8


def film_path(directory: Path, preset: str, seed: int, scan: int | None, det: int | None) -> Path:
    """The film's scan file, simulated when absent (paper geometry unless ``scan``)."""
    if scan is None:
        path = directory / f"{preset}_s{seed}.h5"
        if not path.exists():
            simulate_to_file(path, preset, seed=seed)
    else:
        path = directory / f"{preset}_s{seed}_{scan}x{det}.h5"
        if not path.exists():
            simulate_to_file(path, preset, seed=seed, scan=(scan, scan), det=(det, det))
    return path


def run_peer(args, feature: str, payload: dict, work: Path) -> dict:
    """Write the peer's input, run py4DSTEM in its own environment, read its output."""
    inp, out = work / f"{feature}_in.npz", work / f"{feature}_out.npz"
    np.savez(inp, **payload)
    command = [args.peer_python, str(PEER_SCRIPT), str(inp), str(out),
               "--max-components", str(args.max_components), "--merge-thresh", str(MERGE_THRESHOLDS[feature]),
               "--max-iterations", str(args.max_iterations), "--models", str(args.models),
               "--min-size", str(args.min_size)]
    subprocess.run(command, check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    with np.load(out) as result:
        return {key: result[key] for key in result.files}


def row(name: str, feature: str, result: dict, truth) -> str:
    """One Markdown row: py4DSTEM's regions scored by stemnmf."""
    maps = result["maps"]
    sy, sx = truth.labels.shape[1:]
    region_lab = np.where(maps.max(axis=0) > 0, maps.argmax(axis=0), -1) if maps.shape[0] else np.full((sy, sx), -1)
    s = score_clusters(maps, truth, region_labels=region_lab, clusters="regions").summary()
    cells = " | ".join("n/a" if s.get(key) is None else f"{s[key]:.3f}"
                       for key in ("grain_recall_visible", "grain_recall", "grain_recall_iou", "ARI_regions"))
    return (f"| {name} | {feature.upper()} | py4DSTEM | {cells} | {s['n_clusters']} / {s['n_grains']} "
            f"({s['n_visible_grains']}) | {s['TPR_G']:.3f} | {s['precision_A']:.3f} | {int(result['k'])} | "
            f"{float(result['seconds']):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default="ag1,ag2,ag3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/peer/films")
    parser.add_argument("--features", default="aa,bd,binned")
    parser.add_argument("--models", type=int, default=10, help="py4DSTEM's num_models (restarts)")
    parser.add_argument("--max-components", type=int, default=50)
    parser.add_argument("--max-iterations", type=int, default=10)
    parser.add_argument("--min-size", type=int, default=25)
    parser.add_argument("--peer-python", default="/work/peers/py4dstem/bin/python")
    parser.add_argument("--scan", type=int, default=None)
    parser.add_argument("--det", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.peer_python).exists():
        sys.exit(f"error: no peer environment at {args.peer_python}; make it as bench/peers/README.md says")
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    load = os.getloadavg()[0]
    print(f"# py4DSTEM baseline, {datetime.date.today()}, load {load:.1f}, {args.models} models, seed {args.seed}")
    print("")
    print("| film | feature | method | visible recall | grain recall | recall IoU 0.5 | ARI regions "
          "| regions / grains (visible) | TPR_G | precision_A | k | s |")
    print("| --- " * 12 + "|", flush=True)
    for name in args.films.split(","):
        path = film_path(directory, name, args.seed, args.scan, args.det if args.scan else None)
        truth = load_truth(path)
        stemnmf_features = [f for f in features if f != "binned"]
        raw = prepare(path, stemnmf_features)[1] if stemnmf_features else {}
        with tempfile.TemporaryDirectory(prefix="peer_py4dstem_") as tmp:
            for feature in features:
                if feature == "binned":
                    payload = dict(scan_file=str(path), bin=BIN)
                else:
                    payload = dict(features=np.asarray(raw[feature]), scan_shape=truth.labels.shape[1:])
                result = run_peer(args, feature, payload, Path(tmp))
                print(row(name, feature, result, truth), flush=True)


if __name__ == "__main__":
    main()
