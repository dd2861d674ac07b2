"""``preprocess(dataset, method)``: the preprocessing step of the pipeline."""

from __future__ import annotations

import inspect
import logging

from stemnmf.errors import ConfigError
from stemnmf.filters.lowrank import lowrank_dataset
from stemnmf.filters.peaks import epattern_dataset
from stemnmf.filters.scan import scan_mean

__all__ = ["METHODS", "preprocess"]

log = logging.getLogger(__name__)

#: Preprocessing methods, as named in configurations and on the command line.
METHODS = ("none", "mean3", "epattern", "lowrank")


def _check(func, method: str, options: dict) -> None:
    allowed = {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "engine"
    }
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            f"preprocessing {method!r} has no option(s) {sorted(unknown)}",
            f"its options are {sorted(allowed) or 'none'}",
        )


def preprocess(dataset, method: str = "none", *, engine=None, **options):
    """Denoise a (calibrated) dataset before feature extraction.

    Parameters
    ----------
    dataset : Dataset4D
    method : {'none', 'mean3', 'epattern', 'lowrank'}, default 'none'
        ``'none'``: the data as they are.
        ``'mean3'``: 3 x 3 mean over neighbouring probe positions (Cao et al.);
        option ``size`` (odd, default 3).
        ``'epattern'``: spots found above the noise level and redrawn as clean
        disks; options ``disk_radius`` (default the direct-beam radius),
        ``n_sigma`` (5), ``min_distance``, ``subtract_background`` (True).
        ``'lowrank'``: projection on the leading principal components;
        options ``rank`` (default estimated), ``max_rank`` (30),
        ``oversample`` (10), ``n_power_iter`` (2), ``weighting``
        ('poisson'), ``random_state``.
    engine : Engine, optional

    Returns
    -------
    Dataset4D
        Lazy when the input is lazy; ``metadata['preprocessing']`` records the
        method and options.

    Raises
    ------
    ConfigError
        Unknown method or option.
    """
    if method not in METHODS:
        raise ConfigError(f"preprocessing method {method!r} is unknown", f"use one of {', '.join(METHODS)}")
    if method == "none":
        if options:
            raise ConfigError(f"preprocessing 'none' takes no options, got {sorted(options)}")
        return dataset
    if method == "mean3":
        _check(scan_mean, method, options)
        out = scan_mean(dataset, engine=engine, **options)
    elif method == "epattern":
        _check(epattern_dataset, method, options)
        out = epattern_dataset(dataset, engine=engine, **options)
    else:
        _check(lowrank_dataset, method, options)
        out, _ = lowrank_dataset(dataset, engine=engine, **options)
    metadata = dict(out.metadata)
    plain = (int, float, str, bool, type(None), list, tuple)
    recorded = {k: v if isinstance(v, plain) else repr(v) for k, v in options.items()}
    metadata["preprocessing"] = {"method": method, **recorded}
    log.info("preprocessing: %s %s", method, options or "")
    return out.replace(metadata=metadata)
