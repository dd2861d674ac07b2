"""Throw-away: in-process time of the default indexing, tilt grid +-3/0.5 (default) vs +-2/1 (patched), alternating."""
import functools, os, sys, time, tempfile, logging, argparse
sys.path.insert(0, "bench")
from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.refine import PatternModel
from index_partners import simulate_tilted, run_once
p = argparse.ArgumentParser(); p.add_argument("--seeds", type=int, nargs="+"); p.add_argument("--runs"); a = p.parse_args()
a.phase, a.scan, a.tilt = "LNMO", 32, [1.0, 4.0]
logging.basicConfig(level=logging.WARNING)
new = PatternModel.tilt_search; old = functools.partialmethod(new, span=2.0, step=1.0)
cache = os.environ["STEMNMF_CACHE"]
with tempfile.TemporaryDirectory() as wd:
    for s in a.seeds:
        d, truth = simulate_tilted("LNMO", s, 32, wd, a.tilt); r = run_once(d, truth, a, s)
        orientation_datasets(r, ["LNMO"], dataset=d, cache_dir=cache)  # warm
        t = {"new": [], "old": []}
        for rep in range(3):
            for name, m in (("old", old), ("new", new)):
                PatternModel.tilt_search = m; t0 = time.perf_counter()
                orientation_datasets(r, ["LNMO"], dataset=d, cache_dir=cache); t[name].append(time.perf_counter() - t0)
        PatternModel.tilt_search = new
        print(s, f"load {os.getloadavg()[0]:.1f}", {k: [round(x, 2) for x in v] for k, v in t.items()},
              f"min ratio new/old {min(t['new'])/min(t['old']):.2f}", flush=True)
