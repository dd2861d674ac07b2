"""Run py4DSTEM 0.14.18's ``Featurization`` (iterative NMF, then Yen regions) on one feature matrix.

Runs in the peer virtual environment (bench/peers/README.md), never the project's:

    /work/peers/py4dstem/bin/python bench/peers/py4dstem_featurize.py IN.npz OUT.npz
        [--max-components 50] [--merge-thresh 0.45] [--max-iterations 10] [--models 10]
        [--min-size 25]

``IN.npz`` holds either ``features`` (n_positions, n_features) and ``scan_shape``,
or ``scan_file`` (a stemnmf HDF5 scan file) and ``bin`` (the detector binning):
then the features are the scan's patterns binned ``bin`` x ``bin`` and flattened,
read here with h5py one scan row at a time. py4DSTEM then does what its
featurization tutorial does: min-max scaling, iterative NMF (``num_models``
restarts, the model of lowest reconstruction error kept), class images of the
NMF weights and ``spatial_separation`` (Yen threshold, connected regions of at
least ``min_size`` positions, overlap cleaning). ``OUT.npz`` gets ``maps``
(n_regions, sy, sx: the weights inside each region, 0 outside), ``weights``
(n_positions, k), ``k`` and ``seconds``. py4DSTEM is GPL: it is only ever
called here, from its own environment, and nothing of it is copied.
"""

from __future__ import annotations

import argparse
import logging
import time

import h5py
import numpy as np
from py4DSTEM.process.classification.featurization import Featurization

log = logging.getLogger("py4dstem_featurize")


def binned_patterns(path: str, factor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Patterns of a stemnmf scan file binned ``factor`` x ``factor`` and flattened, (sy * sx, features)."""
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        sy, sx, qy, qx = data.shape
        by, bx = qy // factor, qx // factor
        out = np.empty((sy, sx, by * bx), np.float32)
        for row in range(sy):
            block = np.asarray(data[row], np.float32)[:, : by * factor, : bx * factor]
            out[row] = block.reshape(sx, by, factor, bx, factor).sum(axis=(2, 4)).reshape(sx, by * bx)
    return out.reshape(sy * sx, by * bx), (sy, sx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inp")
    parser.add_argument("out")
    parser.add_argument("--max-components", type=int, default=50)
    parser.add_argument("--merge-thresh", type=float, default=0.45)
    parser.add_argument("--max-iterations", type=int, default=10)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--min-size", type=int, default=25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with np.load(args.inp) as inp:
        if "scan_file" in inp:
            features, scan_shape = binned_patterns(str(inp["scan_file"]), int(inp["bin"]))
        else:
            features, scan_shape = np.asarray(inp["features"], np.float64), tuple(int(s) for s in inp["scan_shape"])
    sy, sx = scan_shape
    t0 = time.perf_counter()
    feat = Featurization(np.asarray(features, np.float64), sy, sx, "peer")
    feat.MinMaxScaler(return_scaled=False)
    # random_seed=None: py4DSTEM draws each model's seed from RandomState(42), so the
    # models differ and the run is reproducible (a fixed seed would repeat one model).
    feat.NMF(max_components=args.max_components, num_models=args.models, merge_thresh=args.merge_thresh,
             max_iterations=args.max_iterations, random_seed=None, save_all_models=False)
    weights = np.asarray(feat.W)
    feat.get_class_ims("NMF")
    feat.spatial_separation(size=args.min_size, threshold=0, method="yen", clean=True)
    seconds = time.perf_counter() - t0
    regions = feat.spatially_separated_ims[0]
    maps = np.stack(regions).astype(np.float32) if regions else np.zeros((0, sy, sx), np.float32)
    log.info("k %d, %d regions, %.1f s", weights.shape[1], maps.shape[0], seconds)
    np.savez(args.out, maps=maps, weights=weights.astype(np.float32), k=weights.shape[1], seconds=seconds)


if __name__ == "__main__":
    main()
