"""Throw-away: index_quality's speed run of one seed, its "no partner polish" lines run with the old tilt grid
(+-2 deg, 1 deg; patched for that call only): the defaults with the new and the old grid in one process."""
import functools, sys
sys.path.insert(0, "bench")
import index_quality
from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.refine import PatternModel
new = PatternModel.tilt_search
old = functools.partialmethod(new, span=2.0, step=1.0)
def patched(*args, **kwargs):
    if kwargs.get("partner_polish") is False:
        PatternModel.tilt_search = old
    try:
        return orientation_datasets(*args, **kwargs)
    finally:
        PatternModel.tilt_search = new
index_quality.orientation_datasets = patched
sys.argv = ["index_quality.py", "--seeds", "--speed-seed", "62", "--speed-scan", "100"]
index_quality.main()
