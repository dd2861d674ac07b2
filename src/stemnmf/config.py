"""Run configuration: one schema for the TOML file, the command line and the docs.

Every option lives in a section dataclass below, with its default and a
one-line help. ``stemnmf run --config run.toml`` reads the same names
(``[features] representation = "aa"``); every option also has a
command-line twin (``--feature aa``), and the command line wins over the
file, which wins over the defaults. ``stemnmf run --print-config`` writes
the defaults as a commented TOML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemnmf.errors import ConfigError

__all__ = [
    "Config",
    "InputConfig",
    "CalibrateConfig",
    "PreprocessConfig",
    "FeaturesConfig",
    "NMFConfig",
    "AnalysisConfig",
    "RunConfig",
    "OrientationsConfig",
    "load_config",
    "add_config_arguments",
    "config_from_args",
    "default_toml",
    "parse_k",
    "parse_k_range",
    "parse_scan_shape",
]


def option(default, help: str, *, flag: str | None = None, choices=None, metavar=None):
    """A config field with its command-line twin."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_k(value) -> str | int | None:
    """``'auto'``, ``'iterative'``, a positive integer, or None (the feature's default, :meth:`NMFConfig.method`)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"k={value!r} is not valid", "use auto, iterative or a number such as 6")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"k={value} must be at least 1")
        return value
    text = str(value).strip().lower()
    if text in ("auto", "iterative"):
        return text
    try:
        return parse_k(int(text))
    except ValueError:
        raise ConfigError(f"k={value!r} is not valid", "use auto, iterative or a number such as 6") from None


def parse_k_range(value) -> tuple[int, int]:
    """``'3:20'`` or ``[3, 20]`` -> (3, 20), both ends included."""
    try:
        if isinstance(value, str):
            low, high = (int(v) for v in value.split(":"))
        else:
            low, high = (int(v) for v in value)
    except (ValueError, TypeError):
        raise ConfigError(f"k range {value!r} is not valid", "write it as LOW:HIGH, e.g. 3:20") from None
    if not 1 <= low < high:
        raise ConfigError(f"k range {value!r} must satisfy 1 <= LOW < HIGH", "e.g. 3:20")
    return low, high


@dataclasses.dataclass
class InputConfig:
    """[input]: how the scan is read; calibration given here overrides the file's."""

    scan_step: float | None = option(None, "distance between probe positions in nm", metavar="NM")
    q_pixel: float | None = option(None, "detector pixel size in 1/Å", metavar="INV_ANGSTROM")
    beam_energy: float | None = option(None, "beam energy in keV", metavar="KEV")
    camera_length: float | None = option(None, "camera length in mm", metavar="MM")
    convergence_angle: float | None = option(None, "probe semi-convergence angle in mrad", metavar="MRAD")
    scan_shape: str | None = option(None, "scan shape of 3D stacks and image folders, e.g. 95x165", metavar="ROWSxCOLS")
    lazy: bool | None = option(None, "read on demand (default: when the file is larger than half the memory budget, 2 GiB or half the free memory, or with --scheduler)")

    def load_options(self) -> dict:
        """Keyword arguments of :func:`stemnmf.io.load` but ``lazy`` (a run decides it with its memory budget)."""
        options = {name: getattr(self, name) for name in
                   ("scan_step", "q_pixel", "beam_energy", "camera_length", "convergence_angle")}
        if self.scan_shape:
            options["scan_shape"] = self.scan_shape
        return options


@dataclasses.dataclass
class CalibrateConfig:
    """[calibrate]: detector corrections before any feature is computed."""

    hot_pixels: bool = option(True, "replace hot pixels by their 3 x 3 median")
    hot_pixel_threshold: float = option(0.55, "fraction above the local sorted intensity that marks a hot pixel")
    bin_q: int = option(1, "bin detector pixels by this factor")
    bin_scan: int = option(1, "bin probe positions by this factor")
    origin: str = option(
        "auto",
        "how to find the origin: the direct beam (com, xcorr), the symmetry of the diffraction over blocks of "
        "positions (symmetry, for a blocked or saturated beam), or auto (com where the beam is visible and consistent)",
        choices=("auto", "com", "xcorr", "symmetry", "none"),
    )
    origin_fit: str = option("plane", "surface fitted to the origins over the scan", choices=("plane", "quadratic", "none"))
    origin_jitter: str = option(
        "auto",
        "per-position origins (com, with a surface): follow the measurements where they scatter about the surface "
        "by more than their own noise (auto), always (follow), or keep the surface (surface)",
        choices=("auto", "follow", "surface"),
    )
    correct_shift: bool = option(False, "shift every pattern so its direct beam is at the mean origin")
    ellipse: bool = option(False, "fit elliptical distortion to a ring of the mean pattern")
    ellipse_min_significance: float = option(
        5.0, "apply the fitted ellipse only when it stands this many bootstrap standard deviations from a circle "
        "(0: always)"
    )
    beam_stop: str = option("auto", "beam-stop mask: auto, none, or a .npy image (True = masked)", metavar="auto|none|FILE")
    edge_pixels: int = option(0, "mask this many pixels at each detector edge")
    on_unreliable: str = option(
        "stop",
        "when the calibration fails its accuracy checks (origins scattering by more than a disk radius, ...): "
        "stop with exit 2, or warn loudly and go on",
        flag="--calibration-unreliable",
        choices=("stop", "warn"),
    )

    def calibrate_options(self) -> dict:
        """Keyword arguments of :func:`stemnmf.calibrate.calibrate` ('none' becomes None; a mask file is read)."""
        import numpy as np

        options = dataclasses.asdict(self)
        for name in ("origin", "origin_fit", "beam_stop"):
            if options[name] == "none":
                options[name] = None
        if options["beam_stop"] not in (None, "auto"):
            path = options["beam_stop"]
            try:
                options["beam_stop"] = np.load(path).astype(bool)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"beam_stop={path!r} is not a readable .npy mask ({exc.__class__.__name__})",
                    "give auto, none, or the path of a .npy boolean image of the detector",
                ) from None
        return options


@dataclasses.dataclass
class PreprocessConfig:
    """[preprocess]: optional denoising of the calibrated patterns (Cao et al. compare these)."""

    method: str = option(
        "none", "denoising before features", flag="--preprocess", choices=("none", "mean3", "epattern", "lowrank")
    )
    rank: int | None = option(None, "rank of the low-rank denoiser (default: estimated)", flag="--lowrank-rank")


@dataclasses.dataclass
class FeaturesConfig:
    """[features]: the representation factorised by NMF."""

    representation: str = option("aa", "aa, rv, bd, raw or a '+'-joined combination such as aa+bd", flag="--feature")
    scaling: str = option(
        "auto",
        "feature scaling; auto: per-feature median-to-max (robust: the background every position shares "
        "becomes 0; see docs/features.md), but none for raw patterns so basis patterns stay patterns "
        "(Cao et al.); minmax is Bruefach et al.'s per-feature min-max",
        choices=("auto", "minmax", "robust", "pattern", "none"),
    )
    sector_width: float = option(5.0, "AA: angular sector width in degrees", metavar="DEG")
    rings: list = option([], "AA: radial bounds of the rings in pixels, e.g. 10:18,22:30 (default: found)", metavar="R0:R1,...")
    r_min: float | None = option(None, "AA/RV: smallest radius in pixels (default: end of the direct beam)", metavar="PX")
    r_max: float | None = option(None, "AA/RV: largest radius in pixels (default: largest on the detector)", metavar="PX")
    disk_radius: float | None = option(None, "BD: Bragg disk radius in pixels (default: from the central beam)", metavar="PX")
    min_snr: float = option(6.0, "BD: smallest disk correlation in noise standard deviations")
    bd_bin: float = option(3.0, "BD: raster bin size in pixels", metavar="PX")
    bd_weight: str = option("intensity", "BD: weight disks by intensity or count them", choices=("intensity", "count"))
    raw_bin: str = option("auto", "raw: bin patterns by this factor (auto: at most 4096 features)", metavar="auto|N")
    raw_transform: str = option("none", "raw: intensity transform", choices=("none", "log", "sqrt"))

    def featurize_options(self) -> dict[str, Any]:
        """The keyword options of :func:`stemnmf.featurize` this section sets."""
        options = dataclasses.asdict(self)
        options.pop("representation")
        if self.scaling == "auto":
            options["scaling"] = "none" if self.representation == "raw" else "robust"
        options["rings"] = [tuple(r) for r in self.rings] or None
        options["raw_bin"] = "auto" if self.raw_bin == "auto" else int(self.raw_bin)
        options["raw_transform"] = None if self.raw_transform == "none" else self.raw_transform
        return options


@dataclasses.dataclass
class NMFConfig:
    """[nmf]: the factorisation and how its number of components is chosen."""

    k: str | int | None = option(
        None,
        "components: auto (K-component loss + IQA, Cao et al.), iterative (merging NMF, Bruefach et al.) or a number; "
        "unset: iterative for aa, rv and bd features, auto for raw (docs/kselect.md)",
        metavar="auto|iterative|N",
    )
    k_range: str = option(
        "2:20", "k values scanned by --k auto and kscan (Cao et al. scanned 3:20)", metavar="LOW:HIGH"
    )
    k_evidence: str = option(
        "combined",
        "--k auto: combined (the loss knee and IQA of Cao et al. vote beside split-half stability, held-out error, "
        "map coherence and a Poisson noise model, every vote counted as distinct orientations (shifted copies and "
        "components with a stronger one's peaks once, peakless ones not), and a vote of the data's own Bragg peaks "
        "(groups of scan blocks with the same peaks), which decides; or cao (the two published levels alone) (docs/kselect.md)",
        choices=("combined", "cao"),
    )
    k_scan: str = option(
        "compressed",
        "--k auto: how each k of the scan is fitted: compressed (X compressed once, every k fitted on its randomised "
        "range, the chosen k then refined on X by the NMF solver) or exact (every k fitted on X by the NMF solver, "
        "as Cao et al.) (docs/kselect.md)",
        choices=("compressed", "exact"),
    )
    solver: str = option("hals", "NMF solver", choices=("hals", "mu", "kl", "compressed"))
    max_iter: int = option(400, "iterations per fit")
    tol: float = option(1e-4, "stop when the objective changes by less than this fraction")
    n_restarts: int = option(25, "iterative NMF: seeded restarts, the best is kept")
    merge_threshold: float | None = option(None, "iterative NMF: map correlation at which components merge (default per feature)")
    scree_factor: int = option(5, "iterative NMF: initial components = PCA scree elbow x this")
    drop_incoherent: bool = option(
        True, "iterative NMF: drop components whose map is more noise than structure (Moran's I below 0.5: they give "
        "no region), then refit the model (docs/nmf.md)"
    )

    def method(self, representation: str) -> str | int:
        """``k`` as set, or the default for the features: 'auto' when they start with raw, else 'iterative'.

        The K-component loss scans 3..20 components and is what Cao et al. use on raw
        patterns of a few large crystals; a film of tens of grains needs more components
        than the scan reaches, and the merging NMF of Bruefach et al. (designed for AA, RV
        and BD) finds their number itself.
        """
        if self.k is not None:
            return self.k
        return "auto" if representation.split("+")[0] == "raw" else "iterative"


@dataclasses.dataclass
class AnalysisConfig:
    """[analysis]: from component maps to clusters, overlaps and grains."""

    overlap_thresholds: list = option([0.75, 0.80, 0.85, 0.90, 0.95], "second/largest weight ratios for overlap maps", metavar="T,T,...")
    refine: str = option("yen", "threshold for spatial refinement", choices=("yen", "otsu", "none"))
    min_region_size: int = option(25, "drop refined regions smaller than this many positions")
    clean: bool = option(False, "give each position to the refined region of largest weight")
    region_merge: bool = option(True, "iterative NMF: join touching regions of components whose Bragg peaks agree (one region per grain)")
    region_agreement: float = option(0.65, "peak agreement (Dice) at which touching regions join", metavar="A")
    fragment_size: int = option(0, "drop regions of fewer positions lying at least half inside another region; 0 keeps them", metavar="N")
    region_split: bool = option(False, "split a region whose raw patterns show groups of blocks with reflections the others lack (one region per grain)")
    split_agreement: float = option(0.7, "peak agreement (Dice) below which blocks of a region's raw patterns form separate groups", metavar="A")
    absorb: int = option(0, "join a region to a touching one whose raw data show all but fewer than N of its peak entries (a thickness-fringe piece of that grain; 4 as tuned); 0: off", metavar="N")


@dataclasses.dataclass
class RunConfig:
    """[run]: reproducibility and where the work runs."""

    seed: int = option(0, "random seed of every random choice")
    memory_budget: str = option("2GiB", "peak memory of the run above its fixed overhead (docs/scale.md)", metavar="SIZE")
    scheduler: str | None = option(None, "dask.distributed scheduler address, e.g. tcp://host:8786", metavar="ADDRESS")
    report: bool = option(True, "write report.html")


@dataclasses.dataclass
class OrientationsConfig:
    """[orientations]: orientation and phase of every component and region (needs the crystal extra)."""

    phases: list = option([], "phases to index: built-in names (Ag, Au, Pd, Cu, Al, Si, LNMO) or CIF files; empty: none", flag="--phase", metavar="NAME,...")
    resolution: float = option(1.0, "spacing of the template orientations, degrees", flag="--index-resolution", metavar="DEG")
    per_position: bool = option(False, "also index every position's pattern (slow)", flag="--index-positions")
    detector_rotation: float = option(0.0, "angle of the detector x axis from the scan x axis, degrees", metavar="DEG")
    detector_flip: bool = option(False, "the detector y axis runs against the scan y axis")
    refine_model: str = option(
        "templates", "orientation refinement: tilt search over the templates, or a continuous fit of a rendered kinematic pattern",
        choices=("kinematic", "templates"),
    )
    vote_positions: int = option(16, "positions per region whose own matches vote with its mean pattern; 0: the mean pattern alone", metavar="N")
    overlap_sums: bool = option(False, "also fit each overlapped region's mean pattern as a sum of two crystals (regions_second)")
    partners: bool = option(False, "choose each region's orientation among it and its projection partners by a kinematic fit of its core, and keep the fitted rotation (slow: 1-2 min per 32 x 32 spinel scan)")
    partner_check: bool = option(True, "without --partners: choose each region's orientation among it and its projection partners by the kinematic score of its core at their own rotations (no fit; about 0.05 s a region)")
    tilt_search: bool = option(True, "without --partners: after the partner check, search each region's tilt on the kinematic score of its core (a grid within 3 degrees in 0.5 degree steps, then halving steps; about 0.1 s a region)")
    partner_switch: bool = option(False, "after the tilt search: where a projection partner scores above the region's orientation at the searched tilt, take the partner (its tilt searched too; a coin on spinel scans, off by default)")
    partner_polish: bool = option(False, "after the tilt search: where a projection partner scores within the ambiguous margin (0.5 %) of the region's orientation, polish both (each from its own searched tilt) and take the better (about 0.2-0.5 s a region; a coin on held-out spinel scans, off by default)")

    def index_options(self) -> dict[str, Any]:
        """Keyword options of :func:`stemnmf.crystal.orientation_datasets`."""
        return {
            "resolution": float(self.resolution),
            "detector_rotation": float(self.detector_rotation),
            "detector_flip": bool(self.detector_flip),
            "refine_model": str(self.refine_model),
            "vote_positions": int(self.vote_positions),
            "overlap_sums": bool(self.overlap_sums),
            "partners": bool(self.partners),
            "partner_check": bool(self.partner_check),
            "tilt_search": bool(self.tilt_search),
            "partner_switch": bool(self.partner_switch),
            "partner_polish": bool(self.partner_polish),
        }


_SECTIONS = {
    "input": InputConfig,
    "calibrate": CalibrateConfig,
    "preprocess": PreprocessConfig,
    "features": FeaturesConfig,
    "nmf": NMFConfig,
    "analysis": AnalysisConfig,
    "run": RunConfig,
    "orientations": OrientationsConfig,
}


@dataclasses.dataclass
class Config:
    """The whole configuration of a run."""

    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    calibrate: CalibrateConfig = dataclasses.field(default_factory=CalibrateConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    nmf: NMFConfig = dataclasses.field(default_factory=NMFConfig)
    analysis: AnalysisConfig = dataclasses.field(default_factory=AnalysisConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    orientations: OrientationsConfig = dataclasses.field(default_factory=OrientationsConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> Config:
        """Check values that types alone do not catch; returns self."""
        self.nmf.k = parse_k(self.nmf.k)
        parse_k_range(self.nmf.k_range)
        if self.input.scan_shape:
            parse_scan_shape(self.input.scan_shape)
        for name in ("bin_q", "bin_scan"):
            if getattr(self.calibrate, name) < 1:
                raise ConfigError(f"calibrate.{name}={getattr(self.calibrate, name)} must be at least 1")
        if not 0 < self.calibrate.hot_pixel_threshold:
            raise ConfigError("calibrate.hot_pixel_threshold must be positive")
        if not 0 < self.features.sector_width <= 180:
            raise ConfigError(f"features.sector_width={self.features.sector_width} must be in (0, 180] degrees")
        if self.features.bd_bin <= 0:
            raise ConfigError(f"features.bd_bin={self.features.bd_bin} must be positive")
        if self.features.raw_bin != "auto" and not (str(self.features.raw_bin).isdigit() and int(self.features.raw_bin) >= 1):
            raise ConfigError(f"features.raw_bin={self.features.raw_bin!r} must be auto or a whole number >= 1")
        if self.nmf.max_iter < 1 or self.nmf.n_restarts < 1:
            raise ConfigError("nmf.max_iter and nmf.n_restarts must be at least 1")
        if self.analysis.min_region_size < 1:
            raise ConfigError("analysis.min_region_size must be at least 1")
        if self.analysis.absorb < 0:
            raise ConfigError(f"analysis.absorb={self.analysis.absorb} must not be negative", "0 (off) or a count such as 1")
        if not 0 < self.analysis.split_agreement <= 1:
            raise ConfigError(f"analysis.split_agreement={self.analysis.split_agreement} must be in (0, 1]", "e.g. 0.75")
        thresholds = [float(t) for t in self.analysis.overlap_thresholds]
        if not thresholds or not all(0 < t <= 1 for t in thresholds):
            raise ConfigError("analysis.overlap_thresholds must be numbers in (0, 1]", "e.g. 0.75,0.8,0.85,0.9,0.95")
        self.analysis.overlap_thresholds = thresholds
        if self.features.rings:
            self.features.rings = _parse_ring_bounds(self.features.rings)
        if self.orientations.vote_positions < 0:
            raise ConfigError(f"orientations.vote_positions={self.orientations.vote_positions} is negative", "give 0 (mean pattern only) or more")
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "configuration") -> Config:
        """Build from nested dicts; unknown sections or keys are errors."""
        sections = {}
        for name, content in values.items():
            if name not in _SECTIONS:
                raise ConfigError(
                    f"unknown section [{name}] in {source}", f"known sections: {', '.join(_SECTIONS)}"
                )
            if not isinstance(content, Mapping):
                raise ConfigError(f"[{name}] in {source} must be a table of options")
            section_cls = _SECTIONS[name]
            known = {f.name: f for f in dataclasses.fields(section_cls)}
            kwargs = {}
            for key, value in content.items():
                if key not in known:
                    raise ConfigError(
                        f"unknown option '{key}' in [{name}] of {source}",
                        f"options of [{name}]: {', '.join(known)}",
                    )
                kwargs[key] = _coerce(value, known[key], f"{name}.{key}", source)
            sections[name] = section_cls(**kwargs)
        return cls(**sections)

    def replace(self, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
        """A copy with ``{section: {key: value}}`` changed."""
        values = self.to_dict()
        for section, content in overrides.items():
            values.setdefault(section, {}).update(content)
        return Config.from_dict(values)


def _field_type(field: dataclasses.Field):
    hint = typing.get_type_hints(_owner(field))[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(args) if len(args) > 1 else args[0]
    return hint


def _owner(field: dataclasses.Field):
    for cls in _SECTIONS.values():
        if any(f is field for f in dataclasses.fields(cls)):
            return cls
    raise KeyError(field.name)  # pragma: no cover


_TYPE_NAMES = {bool: "true/false", int: "whole number", float: "number", list: "list", str: "text"}


def _coerce(value, field: dataclasses.Field, name: str, source: str):
    """Check and convert one value from a file or the command line."""
    if value is None:
        return None
    if name == "nmf.k":
        return parse_k(value)
    kind = _field_type(field)
    choices = field.metadata.get("choices")
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return list(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={value!r} in {source} is not a valid {_TYPE_NAMES.get(kind, 'value')}",
            f"see `stemnmf run --print-config` for the defaults",
        ) from None
    if choices and value not in choices:
        raise ConfigError(f"{name}={value!r} in {source} is not one of {', '.join(choices)}")
    return value


def _parse_ring_bounds(value) -> list[list[float]]:
    bounds = []
    for item in value:
        try:
            low, high = (float(v) for v in (item.split(":") if isinstance(item, str) else item))
        except (ValueError, TypeError):
            raise ConfigError(f"ring bounds {item!r} are not valid", "write them as R0:R1,R0:R1 in pixels") from None
        if not 0 <= low < high:
            raise ConfigError(f"ring bounds {item!r} must satisfy 0 <= R0 < R1")
        bounds.append([low, high])
    return bounds


def load_config(path: str | Path) -> Config:
    """Read a TOML configuration file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist", "check the path or write one with --print-config")
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML ({err})") from None
    return Config.from_dict(values, source=str(path))



def parse_scan_shape(text: str) -> tuple[int, int]:
    """``'95x165'`` or ``'95,165'`` -> (95, 165).

    Raises
    ------
    ConfigError
        If the text is not two positive integers.
    """
    parts = text.lower().replace(",", "x").split("x")
    try:
        sy, sx = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"cannot read the scan shape {text!r}", "write it as ROWSxCOLS, e.g. 95x165") from None
    if sy < 1 or sx < 1:
        raise ConfigError(f"scan shape {text!r} must be positive")
    return sy, sx

# -- command line ------------------------------------------------------------------------------
def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, sections=tuple(_SECTIONS), exclude=()) -> None:
    """Add one option per config field; unset options stay ``argparse.SUPPRESS``.

    ``exclude`` names fields as ``'section.key'`` that get no option.
    """
    for name in sections:
        cls = _SECTIONS[name]
        group = parser.add_argument_group(f"[{name}]", cls.__doc__.split(":", 1)[1].strip())
        for field in dataclasses.fields(cls):
            if f"{name}.{field.name}" in exclude:
                continue
            kind = _field_type(field)
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = ",".join(str(v) for v in default) if isinstance(default, list) else default
            help_text = f"{field.metadata['help']} (default: {shown if shown not in (None, '') else 'unset'})"
            dest = f"cfg__{name}__{field.name}"
            if kind is bool:
                group.add_argument(
                    _flag(field), dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
                )
            else:
                group.add_argument(
                    _flag(field),
                    dest=dest,
                    default=argparse.SUPPRESS,
                    choices=field.metadata.get("choices"),
                    metavar=field.metadata.get("metavar") or (None if field.metadata.get("choices") else field.name.upper()),
                    help=help_text,
                )


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The config file (``args.config``) with command-line options applied on top."""
    config = base or (load_config(args.config) if getattr(args, "config", None) else Config())
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith("cfg__"):
            _, section, key = dest.split("__", 2)
            field = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}[key]
            overrides.setdefault(section, {})[key] = _coerce(value, field, f"{section}.{key}", "the command line")
    return config.replace(overrides) if overrides else config


def default_toml() -> str:
    """The default configuration as a commented TOML document."""
    lines = ["# stemnmf run configuration; every option also has a command-line twin", ""]
    for name, cls in _SECTIONS.items():
        lines.append(f"# {cls.__doc__.split(':', 1)[1].strip()}")
        lines.append(f"[{name}]")
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            lines.append(f"# {field.metadata['help']} ({_flag(field)})")
            if default is None:
                lines.append(f"# {field.name} =        (unset)")
            else:
                lines.append(f"{field.name} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def reference_markdown() -> str:
    """The configuration reference (docs/config.md): every option, its flag, default and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "Every option of `stemnmf run` can be set in a TOML file (`--config run.toml`) under its section, or on "
        "the command line with its flag; the command line wins over the file, which wins over the defaults. "
        "`stemnmf run --print-config > run.toml` writes the defaults as a starting point. This page is generated "
        "from `stemnmf.config` (`python -m stemnmf.config > docs/config.md`).",
        "",
    ]
    for name, cls in _SECTIONS.items():
        lines += [f"## [{name}]", "", cls.__doc__.split(":", 1)[1].strip(), "", "| option | flag | default | meaning |", "| --- | --- | --- | --- |"]
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = "unset" if default is None or default == [] else f"`{_toml_value(default)}`"
            meaning = field.metadata["help"]
            if field.metadata.get("choices"):
                meaning += " (" + ", ".join(field.metadata["choices"]) + ")"
            flag = _flag(field)
            if _field_type(field) is bool:
                flag = f"{flag} / --no-{flag[2:]}"
            lines.append(f"| `{field.name}` | `{flag}` | {shown} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
