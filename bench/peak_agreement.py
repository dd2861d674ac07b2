"""Does the same-grain test on the patterns separate one grain's pieces from two grains? (issue 16)

    .venv/bin/python bench/peak_agreement.py /tmp/i16/fam/ag1_s11_64.h5 ... [--features aa,bd] [--restarts 10]

Each film (a ``stemnmf simulate`` scan with its truth) is featurised with the
run's defaults and factorised by ``IterativeNMF`` with the evidence rule as it
was before the same-grain test (links and shared footprints free; seed 0). In
every merge round of the winning restart and of the final refit, each pair of
components that the links or a shared footprint would merge, and whose merge
costs more than 3 noise gates (the pairs that ``link_tolerance=3`` refuses),
is labelled by the truth: *two grains* when the components' footprints match
different grains (IoU >= 0.3 each, ``grain_loss.owners``), *one grain* when
they match the same one. For each pair the Dice agreement of the patterns'
peaks (:func:`stemnmf.decompose.evidence.peak_agreement` of
:func:`~stemnmf.decompose.evidence.pattern_peaks`, noise from
:func:`~stemnmf.decompose.evidence.pattern_noise`) is computed; printed are its
percentiles per class and feature and the share of each class at or above
0.5, 0.6 and 0.7.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402
from grain_loss import MergeRecorder, owners  # noqa: E402

from stemnmf.decompose import IterativeNMF, evidence  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

TOLERANCE = 3.0


class PairRecorder(MergeRecorder):
    """Records, per merge round on all positions, the agreement and truth label of each costly candidate pair."""

    def merge_evidence(self, Wt, H, WtX, row_sq, col_sq, **kwargs):
        ev = self._evidence(Wt, H, WtX, row_sq, col_sq, **kwargs)
        if Wt.shape[1] != self.labels[0].size:
            return ev  # a restart on a subset of positions
        agreement = evidence.peak_agreement(evidence.pattern_peaks(H, evidence.pattern_noise(Wt, col_sq)))
        corr = np.nan_to_num(np.corrcoef(np.asarray(Wt, np.float64)), nan=-1.0)
        candidate = ev.linked | ((ev.footprint >= evidence.FOOTPRINT_THRESHOLD) & (corr >= 0))
        costly = ev.cost > TOLERANCE * ev.gate
        grain, share = owners(Wt, self.labels)
        rounds = self.merges[self._local.label]
        pairs = []
        for a, b in zip(*np.nonzero(np.triu(candidate & costly, 1))):
            if min(share[a], share[b]) >= 0.3:
                pairs.append((bool(grain[a] != grain[b]), float(agreement[a, b])))
        rounds.append(pairs)
        return ev

    def groups(self, accepted, cost):
        return self._groups(accepted, cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("films", nargs="+")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    features = args.features.split(",")
    found = {f: {True: [], False: []} for f in features}
    for film in args.films:
        path = Path(film)
        _, raw, _ = prepare(path, features)
        labels = np.asarray(load_truth(path).labels) > 0
        for feature in features:
            X, _, _ = scale_features(raw[feature], "robust")
            with PairRecorder(labels) as recorder:
                model = IterativeNMF(feature=feature, n_restarts=args.restarts, max_iter=400, random_state=args.seed,
                                     link_tolerance=None, peak_agreement=None, limit_footprints=True)
                model.fit(X)
            best = model.restart_seeds_[model.best_restart_]
            for pairs in recorder.merges[f"restart seed {best}"] + recorder.merges["final refit"]:
                for two, value in pairs:
                    found[feature][two].append(value)
    print("| feature | pairs | n | agreement percentiles 0 / 10 / 25 / 50 / 75 / 90 / 100 | >= 0.5 | >= 0.6 | >= 0.7 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for feature in features:
        for two in (True, False):
            v = np.asarray(found[feature][two])
            if not v.size:
                continue
            q = " / ".join(f"{x:.2f}" for x in np.percentile(v, [0, 10, 25, 50, 75, 90, 100]))
            shares = " | ".join(f"{np.mean(v >= t):.2f}" for t in (0.5, 0.6, 0.7))
            print(f"| {feature.upper()} | {'two grains' if two else 'one grain'} | {v.size} | {q} | {shares} |")


if __name__ == "__main__":
    main()
