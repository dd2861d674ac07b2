"""The controls of issue 16 under each merging rule: four separate blobs, a grain split by thickness fringes.

    .venv/bin/python bench/merge_controls.py

Builds the scenes of tests/test_merge_evidence.py (truth by construction) and
prints, for the paper's rule, the transitive rule with the pattern link
(stemnmf before issue 16), complete linkage of the links alone, the
evidence rule with links free, within a tolerance, or within it unless the
patterns' peaks agree (the default): the final k on the four blobs at thresholds 0.2-0.6
(truth 4), and on the three-grain scene the number of components on grain A
(truth 1), whether C and D (one orientation, far apart) share a component and
whether A and C (touching, one phase) do (truth: yes, no).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_merge_evidence import four_blobs, grains_scene  # noqa: E402

from stemnmf.decompose import IterativeNMF  # noqa: E402

#: The evidence rule with links and shared footprints free.
FREE = dict(link_tolerance=None, peak_agreement=None, limit_footprints=True)
RULES = {
    "paper (maps only, transitive)": dict(merge_rule="transitive", pattern_threshold=None),
    "transitive + pattern link": dict(merge_rule="transitive"),
    "links only, complete linkage": dict(FREE, merge_tolerance=0.0, footprint_threshold=None),
    "evidence, links free (the default before the same-grain test)": dict(FREE),
    "evidence, links within 30 noise gates": dict(FREE, link_tolerance=30.0),
    "evidence, links within 10 noise gates": dict(FREE, link_tolerance=10.0),
    "evidence, links within 3 noise gates": dict(FREE, link_tolerance=3.0),
    "evidence, links and footprints within 3 gates or with agreeing peaks (0.5)": dict(
        link_tolerance=3.0, peak_agreement=0.5, limit_footprints=True),
    "evidence, links within 3 gates or with agreeing peaks (0.5), footprints free (default)": {},
}


def main() -> None:
    _, X = four_blobs()
    scene, grains = grains_scene()
    print("| rule | blobs: k at 0.2 / 0.3 / 0.4 / 0.5 / 0.6 | components on A | C, D one component | A, C one component |")
    print("| --- | --- | --- | --- | --- |")
    for name, options in RULES.items():
        ks = [
            IterativeNMF(random_state=0, merge_threshold=t, n_restarts=4, n_jobs=1, **options).fit(X).n_components_
            for t in (0.2, 0.3, 0.4, 0.5, 0.6)
        ]
        W = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, **options).fit_transform(scene)
        share = {g: W[m.ravel()].sum(axis=0) / W.sum(axis=0) for g, m in grains.items()}
        on_a = int((share["A"] > 0.5).sum())
        cd = int(np.argmax(share["C"])) == int(np.argmax(share["D"]))
        ac = int(np.argmax(share["A"])) == int(np.argmax(share["C"]))
        print(f"| {name} | {' / '.join(map(str, ks))} | {on_a} | {cd} | {ac} |", flush=True)


if __name__ == "__main__":
    main()
