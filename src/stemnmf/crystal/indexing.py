"""Orientation and phase of every component, region and (optionally) position of a run.

:func:`index_patterns` matches calibrated patterns against the templates of
one or more phases; :func:`index` does it for the component and region
patterns of a results file (and every position of the scan when asked) and
returns the ``/orientations/*`` datasets of DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from stemnmf.crystal.boundaries import boundary_table
from stemnmf.crystal.consensus import sample_positions, vote_orientations
from stemnmf.crystal.matching import (
    MatchResult,
    azimuth_spectra,
    best_scores,
    match_patterns,
    misorientation_angles,
    peak_offset,
    polar_grid,
    polar_images,
    rotation_scores,
    rotation_z,
    solution_rotation,
    template_matrix,
)
from stemnmf.crystal.kinematics import reflection_table
from stemnmf.crystal.overlap import index_sums
from stemnmf.crystal.partners import check_partners, fit_alone, fit_partners, polish_partners, switch_partner
from stemnmf.crystal.refine import DetectorGeometry, PatternModel
from stemnmf.crystal.rotations import axis_angle_matrix, matrices_to_quaternions
from stemnmf.crystal.phases import load_phases, require_crystal_extra
from stemnmf.crystal.templates import SpotTable, default_cache_dir, make_templates
from stemnmf.errors import ConfigError, ResultsError
from stemnmf.io.dataset import electron_wavelength

__all__ = ["IndexOptions", "Indexer", "index_patterns", "orientation_datasets"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """Settings of the template matching (defaults in brackets).

    Attributes
    ----------
    resolution : float
        Spacing of the template beam directions, degrees [1].
    excitation_error : float
        First zero of the templates' rocking curve sinc^2(pi s t), 1/Å (1 / thickness) [0.02].
    r_min : float or None
        Smallest spot radius used, 1/Å [None: three disk radii, at least 0.1].
    n_angles : int
        In-plane angle steps over 360° [360].
    pattern_power, template_power : float
        Compression of pattern intensities (0: log1p in noise units) and of
        template intensities (power) [0, 0.25].
    distinct_angle : float
        Solutions closer than this to the best are not its second-best distinct solution, degrees [5].
    refine : bool
        Polish each best orientation by a local search below the template spacing [True].
    refine_excitation_error : float or None
        Excitation error of the refinement's spots [None: ``excitation_error``].
    refine_candidates : int
        How many mutually distinct solutions (best first) are refined [None: 2 for
        ``'templates'``, of which only those within 10 % of the best; 4 for ``'kinematic'``].
    refine_model : str
        ``'templates'``: a tilt search over diffsims spots on the polar grid;
        ``'kinematic'``: each candidate is fitted continuously (three angles and the
        thickness) to a rendered kinematic pattern (:mod:`.refine`): far more precise,
        but on held-out spinel scans it chose the wrong one of near-equal solutions
        slightly more often (bench/RESULTS-index.md) [``'templates'``].
    model_blur : float
        Gaussian blur of the rendered disks, pixels (``refine_model='kinematic'``) [0.5].
    detector_rotation : float
        Angle of the detector x axis from the scan x axis, degrees, counter-clockwise [0].
    detector_flip : bool
        The detector y axis runs against the scan y axis [False].
    cache_dir : str or None
        Template cache [None: $STEMNMF_CACHE/templates or ~/.cache/stemnmf/templates].
    vote_positions : int
        Positions per region and per component (drawn from the stronger half of its
        weight map) whose own solutions vote with the mean pattern's; 0: the mean
        pattern alone. Needs the scan [16].
    vote_radius : float or None
        Cluster radius of the vote, degrees [None: max(distinct_angle, 2 resolution)].
    vote_templates : int
        The sampled positions of a region are matched only against this many templates
        (and mirrors) per phase: those that fit the mean of the region's sampled
        positions best; a position whose own best template is among them gets the same
        solution as from every template. 0: every template (slower; bench/RESULTS-index.md,
        round 5) [128].
    vote_escalate : int
        Regions and components whose vote has no majority (votes <= half the candidates) vote
        again with up to this many positions; 0 (or not above ``vote_positions``): no second
        vote [0].
    random_state : int
        Seed of the positions' draw [0].
    overlap_sums : bool
        Fit the mean pattern of each region that the analysis marks ``overlapped`` as a
        non-negative sum of two crystals (:mod:`.overlap`) and report the second orientation
        where the sum fits better by ``overlap_gain`` [False: on simulated films most of the sums
        it found were not a second grain of the region (bench/RESULTS-index.md, round 4)].
    overlap_gain : float
        Relative gain of the sum's score over the single crystal's needed to call it a sum [0.1].
    overlap_min_share : float
        Smallest share of the fitted intensity the weaker crystal must carry [0.15].
    partners : bool
        Decide each region's orientation (each component's when the run has no regions)
        among it and its projection partners (:mod:`.partners`: the orientations with the
        same zero-order pattern) by the kinematic fit (:mod:`.refine`) of the mean pattern
        of the region's core positions, and take the winner's fitted rotation (a solution
        without partners is fitted alone) [False].
    partner_check : bool
        Without ``partners``: score each region's orientation (each component's when the run
        has no regions) and its projection partners with the kinematic model at their own
        rotations, each at its best thickness, on the mean pattern of the region's core, and
        take the best (:func:`.partners.check_partners`; no fit, about 0.05 s a region)
        [True].
    partner_gain : float
        Relative gain of a partner's fitted (or checked) score over the orientation's needed to take it [0.0].
    partner_erosion : int
        The core: the positions of a weight map above half its maximum, eroded by this
        many positions (fewer where fewer than 8 would be left) [2].
    tilt_search : bool
        Without ``partners``: after the partner check, search each region's (component's) tilt on
        the kinematic score of its core (a grid of tilts within 3° in 0.5° steps, then a compass search:
        :meth:`.refine.PatternModel.tilt_search`; the template refinement can stop 2-4° off), and
        take the margin over its partners at that tilt [True].
    partner_switch : bool
        With ``tilt_search`` and ``partner_check``: where a projection partner scores above the
        chosen rotation by more than ``partner_gain`` at the searched tilt, take the partner and
        search its own tilt (:func:`.partners.switch_partner`); a switched region is flagged ambiguous
        [False: on held-out spinel scans 3 regions wrong -> right and 2 right -> wrong, and one right
        region of a two-phase film wrong (bench/RESULTS-index.md, round 11)].
    partner_polish : bool
        With ``tilt_search`` and ``partner_check``: where the margin over the best projection partner
        at the searched tilt is below ``ambiguous_margin``, polish the rotation and each partner (each
        from its own searched tilt; :func:`.partners.polish_partners`) and take the best; the region
        keeps the smaller margin, before or after (it stays flagged) [False: on seen spinel scans 15
        regions wrong -> right and 6 right -> wrong, on held-out ones 3 and 4 (bench/RESULTS-index.md,
        round 12)].
    ambiguous_margin : float
        A region (component) is flagged ambiguous (``regions_ambiguous``) when the runner-up among
        it and its projection partners scores within this relative margin of the chosen one, or
        when its positions' vote has no majority [0.005].
    """

    resolution: float = 1.0
    excitation_error: float = 0.02
    r_min: float | None = None
    n_angles: int = 360
    pattern_power: float = 0.0
    template_power: float = 0.25
    distinct_angle: float = 5.0
    refine: bool = True
    refine_excitation_error: float | None = 0.01
    refine_candidates: int | None = None
    refine_model: str = "templates"
    model_blur: float = 0.5
    detector_rotation: float = 0.0
    detector_flip: bool = False
    cache_dir: str | None = None
    vote_positions: int = 16
    vote_radius: float | None = None
    vote_templates: int = 128
    vote_escalate: int = 0
    random_state: int = 0
    overlap_sums: bool = False
    overlap_gain: float = 0.1
    overlap_min_share: float = 0.15
    partners: bool = False
    partner_check: bool = True
    partner_gain: float = 0.0
    partner_erosion: int = 2
    tilt_search: bool = True
    partner_switch: bool = False
    partner_polish: bool = False
    ambiguous_margin: float = 0.005

    def __post_init__(self):
        if not (0.1 <= float(self.resolution) <= 10):
            raise ConfigError(f"resolution={self.resolution!r} is out of range", "give 0.1 to 10 degrees")
        if not float(self.excitation_error) > 0:
            raise ConfigError(f"excitation_error={self.excitation_error!r} must be positive")
        if int(self.n_angles) < 36:
            raise ConfigError(f"n_angles={self.n_angles!r} is too coarse", "give at least 36")
        if self.refine_model not in ("kinematic", "templates"):
            raise ConfigError(f"refine_model={self.refine_model!r} is unknown", "give 'kinematic' or 'templates'")
        if not float(self.model_blur) >= 0:
            raise ConfigError(f"model_blur={self.model_blur!r} must be 0 or more (pixels)")
        if not (float(self.overlap_gain) >= 0 and 0 <= float(self.overlap_min_share) <= 0.5):
            raise ConfigError(
                f"overlap_gain={self.overlap_gain!r} / overlap_min_share={self.overlap_min_share!r} out of range",
                "give a gain >= 0 and a share from 0 to 0.5",
            )
        if int(self.vote_templates) < 0:
            raise ConfigError(f"vote_templates={self.vote_templates!r} is negative", "give 0 (every template) or more")
        if int(self.vote_positions) < 0:
            raise ConfigError(f"vote_positions={self.vote_positions!r} is negative", "give 0 (mean pattern only) or more")
        if not (float(self.partner_gain) >= 0 and int(self.partner_erosion) >= 0 and float(self.ambiguous_margin) >= 0):
            raise ConfigError(
                f"partner_gain={self.partner_gain!r} / partner_erosion={self.partner_erosion!r} / "
                f"ambiguous_margin={self.ambiguous_margin!r} out of range",
                "give a gain >= 0, an erosion >= 0 positions and a margin >= 0",
            )

    @property
    def radius(self) -> float:
        """Cluster radius of the vote, degrees."""
        if self.vote_radius is not None:
            return float(self.vote_radius)
        return max(float(self.distinct_angle), 2.0 * float(self.resolution))


class Indexer:
    """Templates of the phases on one polar grid, ready to match patterns of one detector geometry.

    Parameters
    ----------
    phases : list of str, path-like or orix Phase
    pattern_shape : (int, int)
    q_pixel : float
        1/Å per pixel.
    beam_energy : float
        keV.
    origin : (float, float), optional
        Direct beam (row, col) in pixels; the detector centre by default.
    convergence_angle : float, optional
        mrad; sets the default ``r_min``.
    options : IndexOptions, optional
    """

    def __init__(self, phases, pattern_shape, *, q_pixel, beam_energy, origin=None, convergence_angle=None, options=None):
        require_crystal_extra("indexing")
        if q_pixel is None or beam_energy is None:
            missing = "q_pixel" if q_pixel is None else "beam_energy"
            raise ConfigError(f"indexing needs the calibration's {missing}", f"give --{missing.replace('_', '-')} to `stemnmf run`")
        self.options = options or IndexOptions()
        self.phases = load_phases(phases)
        self.q_pixel, self.origin = float(q_pixel), origin
        self.wavelength = electron_wavelength(beam_energy)
        disk = (convergence_angle or 1.0) * 1e-3 / self.wavelength
        self.disk_radius = disk / self.q_pixel if convergence_angle else 1.0
        r_min = self.options.r_min
        if r_min is None:
            r_min = max(0.1, 3.0 * disk)
        self.grid = polar_grid(pattern_shape, q_pixel=self.q_pixel, origin=origin, r_min=r_min, n_angles=self.options.n_angles)
        self.templates = [
            make_templates(
                phase,
                beam_energy=beam_energy,
                q_max=self.grid.r_max + self.q_pixel,
                resolution=self.options.resolution,
                excitation_error=self.options.excitation_error,
                cache_dir=self.options.cache_dir,
            )
            for phase in self.phases
        ]
        self.pattern_shape = tuple(int(v) for v in pattern_shape)
        self._model = None
        self._spot_tables = {}
        self.matrices = [
            template_matrix(t.radius, t.angle, t.intensity, self.grid, power=self.options.template_power)
            for t in self.templates
        ]

    @property
    def phase_names(self) -> list[str]:
        return [p.name for p in self.phases]

    def polar(self, patterns) -> np.ndarray:
        """Polar images of patterns (n, qy, qx) on the indexer's grid."""
        o = self.options
        return polar_images(
            patterns,
            self.grid,
            q_pixel=self.q_pixel,
            origin=self.origin,
            detector_rotation=o.detector_rotation,
            detector_flip=o.detector_flip,
            power=o.pattern_power,
        )

    def match(self, patterns, *, refine: bool | None = None) -> MatchResult:
        """Best orientation, phase, score and confidence of each pattern (n, qy, qx).

        ``refine`` (default: ``options.refine``) polishes the best candidates
        below the template spacing and keeps the best polished one
        (:meth:`refine_pattern`).
        """
        patterns = np.asarray(patterns, dtype=np.float32)
        if patterns.ndim == 2:
            patterns = patterns[None]
        polar = self.polar(patterns)
        result = match_patterns(polar, self.templates, self.matrices, self.grid, distinct_angle=self.options.distinct_angle)
        if self.options.refine if refine is None else refine:
            for i in range(len(polar)):
                self._refine_candidates(patterns[i], polar[i], result, i)
        return result

    @property
    def model(self) -> PatternModel:
        """The rendered-pattern model of :mod:`.refine` (built on first use)."""
        if self._model is None:
            qy, qx = self.pattern_shape
            q_max = (math.hypot(qy, qx) + self.disk_radius + 4) * self.q_pixel
            cache = self.options.cache_dir if self.options.cache_dir is not None else default_cache_dir()
            tables = [reflection_table(phase, q_max=q_max, wavelength=self.wavelength, cache_dir=cache) for phase in self.phases]
            origin = self.origin if self.origin is not None else ((qy - 1) / 2, (qx - 1) / 2)
            o = self.options
            geometry = DetectorGeometry(
                self.pattern_shape, self.q_pixel, tuple(float(v) for v in origin), rotation=o.detector_rotation,
                flip=o.detector_flip, disk_radius=self.disk_radius, blur=o.model_blur,
            )
            self._model = PatternModel(tables, geometry, r_min=self.grid.r_min)
        return self._model

    def refine_pattern(self, pattern, rotation, phase: int):
        """Polish one candidate orientation of a pattern (qy, qx); returns the rotation and its score."""
        if self.options.refine_model == "kinematic":
            best, _, score = self.model.refine(self.model.prepare(pattern), rotation, phase, search_deg=self.options.resolution)
            return best, score
        return self.refine(self.polar(np.asarray(pattern)[None])[0], rotation, phase)

    def _refine_candidates(self, pattern, polar, result: MatchResult, i: int, close: float = 0.9) -> None:
        """Refine the best solution and the next distinct ones; keep the best refined.

        Near symmetric zone axes (<111>, <112> of cubic crystals) a crystal and
        its Σ3 twin give almost the same zero-order pattern; only the fit of the
        excitation errors (the Laue circle) tells them apart. The confidence
        becomes 1 - (best refined other) / (best refined).
        """
        kinematic = self.options.refine_model == "kinematic"
        count = self.options.refine_candidates or (4 if kinematic else 2)
        scores = result.alternative_scores[i][:count]
        candidates = [
            j for j in range(len(scores)) if np.isfinite(scores[j]) and (kinematic or j == 0 or scores[j] >= close * scores[0])
        ]
        phases = [int(result.alternative_phases[i, j]) for j in candidates]
        if kinematic:
            prepared = self.model.prepare(pattern)
            search = self.options.resolution
            refined = [
                self.model.refine(prepared, result.alternatives[i, j], p, search_deg=search)[::2] for j, p in zip(candidates, phases)
            ]
        else:
            refined = [self.refine(polar, result.alternatives[i, j], p) for j, p in zip(candidates, phases)]
        order = np.argsort([score for _, score in refined])[::-1]
        best = candidates[order[0]]
        result.rotations[i], result.score[i] = refined[order[0]]
        result.phase[i] = result.alternative_phases[i, best]
        winner = refined[order[0]][0]
        others = [refined[k][1] for k in order[1:] if self._distinct(refined[k][0], candidates[k], winner, best, result, i)]
        if others:
            result.confidence[i] = max(0.0, 1.0 - others[0] / result.score[i]) if result.score[i] > 0 else 0.0

    def _distinct(self, rotation, j: int, best_rotation, best: int, result: MatchResult, i: int) -> bool:
        phase = int(result.alternative_phases[i, j])
        if phase != int(result.alternative_phases[i, best]):
            return True
        angle = misorientation_angles(best_rotation, np.asarray(rotation)[None], self.templates[phase].symmetry)[0]
        return bool(angle > self.options.distinct_angle)

    def refinement_spots(self, rotations, phase: int):
        """Spots (radius, angle, intensity), each (n, m), of lab rotations (n, 3, 3) of a phase at ``refine_excitation_error``.

        diffsims' spots (:class:`.templates.SpotTable`, whose reflections are found once per phase).
        """
        if phase not in self._spot_tables:
            settings = dict(self.templates[phase].settings)
            if self.options.refine_excitation_error is not None:
                settings["excitation_error"] = float(self.options.refine_excitation_error)
            self._spot_tables[phase] = SpotTable(self.phases[phase], settings)
        return self._spot_tables[phase].spots(rotations)

    def refine(self, polar, rotation, phase: int, steps: int = 4):
        """Local search around ``rotation``: tilts about the sample x and y axes by +-d (d = 0.75 resolution, halving each step).

        Each candidate's spots are diffsims' (:class:`.templates.SpotTable`); the in-plane angle is
        searched in full at every step. Returns the best rotation and its score.
        """
        best, best_score = np.asarray(rotation, dtype=np.float64), -np.inf
        step = self.options.resolution * 0.75
        for _ in range(steps):
            tilts = [(a, b) for a in (-step, 0.0, step) for b in (-step, 0.0, step)]
            candidates = np.stack([axis_angle_matrix((1, 0, 0), a) @ axis_angle_matrix((0, 1, 0), b) @ best for a, b in tilts])
            radius, angle, intensity = self.refinement_spots(candidates, phase)
            matrix = template_matrix(radius, angle, intensity, self.grid, power=self.options.template_power)
            scores = rotation_scores(polar[None], azimuth_spectra(matrix, self.grid, np.arange(len(candidates))), self.grid)[0]
            row, column = np.unravel_index(int(scores.argmax()), scores.shape)
            if scores[row, column] > best_score:
                phi = (column + peak_offset(scores[row], column)) * 2 * np.pi / self.grid.n_angles
                best, best_score = rotation_z(phi) @ candidates[row], float(scores[row, column])
            step /= 2.0
        return best, best_score

    def shortlist(self, pattern, size: int) -> list[np.ndarray]:
        """Template matrix rows (templates and mirrors) of each phase that fit a pattern (qy, qx) best: ``size`` per phase."""
        scores = best_scores(self.polar(np.asarray(pattern)[None]), self.matrices, self.grid)
        return [np.sort(np.argsort(s[0], kind="stable")[::-1][:size]) for s in scores]

    def match_among(self, patterns, rows: list[np.ndarray]):
        """Best orientation, phase and score of each pattern (n, qy, qx) among the template rows of each phase (:meth:`shortlist`).

        The same solution as :meth:`match` (unrefined) gives whenever that one is among the rows.
        """
        polar = self.polar(np.asarray(patterns, dtype=np.float32))
        n, step = len(polar), 2 * np.pi / self.grid.n_angles
        rotations, phases, scores = np.tile(np.eye(3), (n, 1, 1)), np.zeros(n, np.int32), np.full(n, -np.inf)
        for p, (matrix, chosen) in enumerate(zip(self.matrices, rows)):
            if not len(chosen):
                continue
            found = rotation_scores(polar, azimuth_spectra(matrix, self.grid, chosen), self.grid)  # (n, m, n_angles)
            flat = found.reshape(n, -1).argmax(axis=1)
            for i, (k, column) in enumerate(zip(*np.unravel_index(flat, found.shape[1:]))):
                if found[i, k, column] > scores[i]:
                    phi = (column + peak_offset(found[i, k], column)) * step
                    rotations[i] = solution_rotation(self.templates[p], int(chosen[k]), phi)
                    phases[i], scores[i] = p, float(found[i, k, column])
        return rotations, phases, scores


def index_patterns(patterns, phases, *, q_pixel, beam_energy, origin=None, convergence_angle=None, **options) -> MatchResult:
    """Orientation and phase of each calibrated pattern (n, qy, qx); options as in :class:`IndexOptions`."""
    patterns = np.asarray(patterns, dtype=np.float32)
    if patterns.ndim == 2:
        patterns = patterns[None]
    indexer = Indexer(
        phases,
        patterns.shape[1:],
        q_pixel=q_pixel,
        beam_energy=beam_energy,
        origin=origin,
        convergence_angle=convergence_angle,
        options=IndexOptions(**options),
    )
    return indexer.match(patterns)


def _datasets(prefix: str, result: MatchResult) -> dict:
    return {
        f"/orientations/{prefix}": matrices_to_quaternions(result.rotations).reshape(-1, 4),
        f"/orientations/{prefix}_phase": result.phase.astype(np.int32),
        f"/orientations/{prefix}_score": result.score.astype(np.float64),
        f"/orientations/{prefix}_confidence": result.confidence.astype(np.float64),
        f"/orientations/{prefix}_reliability": result.reliability.astype(np.float64),
    }


def _take(result: MatchResult, index) -> MatchResult:
    return MatchResult(*(np.asarray(getattr(result, f.name))[index] for f in dataclasses.fields(MatchResult)))


def _component_result(indexer: Indexer, results, dataset=None):
    """Index the mean and representative pattern of each component; keep the better-scoring of the two.

    With the scan, the components' sampled positions then vote (:func:`_vote`).
    Returns the solutions, their source names and the vote's counts (or None).
    """
    sources = [p for p in ("/components/mean_patterns", "/components/representative_patterns") if p in results]
    if not sources:
        return None, None, None
    found = [indexer.match(np.asarray(results[p], dtype=np.float32)) for p in sources]
    scores = np.stack([f.score for f in found])
    choice = scores.argmax(axis=0)
    merged = _take(found[0], slice(None))
    for i, f in enumerate(found[1:], start=1):
        pick = choice == i
        for field in dataclasses.fields(MatchResult):
            getattr(merged, field.name)[pick] = getattr(f, field.name)[pick]
    kinds = np.array([sources[c].split("/")[-1] for c in choice])
    if not _voting(indexer, dataset, results, "/components/maps"):
        return merged, kinds, None
    return merged, kinds, _vote(indexer, merged, np.asarray(results["/components/maps"]), dataset)


def _read_positions(dataset, chosen: list[np.ndarray]) -> list[np.ndarray]:
    """Patterns (n_i, qy, qx) at the flat position indices of each list, read row by row."""
    sx = dataset.scan_shape[1]
    rows = {}
    for y in sorted({int(i) // sx for flat in chosen for i in flat}):
        rows[y] = np.asarray(dataset.read_rows(y, y + 1), dtype=np.float32)[0]
    empty = np.zeros((0, *dataset.pattern_shape), np.float32)
    return [np.stack([rows[int(i) // sx][int(i) % sx] for i in flat]) if len(flat) else empty for flat in chosen]


def _vote(indexer: Indexer, result: MatchResult, weight_maps, dataset) -> dict:
    """Replace each solution by the consensus of it and its sampled positions' solutions (:mod:`.consensus`).

    With ``vote_escalate``, the solutions without a majority vote again with more positions.
    """
    o = indexer.options
    chosen = sample_positions(weight_maps, int(o.vote_positions), random_state=o.random_state)
    votes = vote_orientations(indexer, result, _read_positions(dataset, chosen), radius=o.radius, shortlist=int(o.vote_templates))
    undecided = np.flatnonzero(2 * votes["votes"] <= votes["candidates"])
    if int(o.vote_escalate) <= int(o.vote_positions) or not undecided.size:
        return votes
    more = sample_positions(weight_maps[undecided], int(o.vote_escalate), random_state=o.random_state)
    subset = _take(result, undecided)
    again = vote_orientations(indexer, subset, _read_positions(dataset, more), radius=o.radius, shortlist=int(o.vote_templates))
    for field in dataclasses.fields(MatchResult):
        getattr(result, field.name)[undecided] = getattr(subset, field.name)
    for key in votes:
        votes[key][undecided] = again[key]
    log.info("%d solutions without a majority voted again with up to %d positions", len(undecided), o.vote_escalate)
    return votes


def _voting(indexer: Indexer, dataset, results, maps_path: str) -> bool:
    return dataset is not None and indexer.options.vote_positions > 0 and maps_path in results


def _core_positions(weight_map, erosion: int, least: int = 8) -> np.ndarray:
    """Flat indices of a weight map's core: above half its maximum, eroded by up to ``erosion`` positions."""
    weights = np.nan_to_num(np.asarray(weight_map, dtype=np.float64))
    inside = weights > 0.5 * weights.max() if weights.max() > 0 else np.zeros(weights.shape, bool)
    for e in range(int(erosion), 0, -1):
        core = ndimage.binary_erosion(inside, iterations=e)
        if core.sum() >= least:
            return np.flatnonzero(core)
    return np.flatnonzero(inside)


def _choose_partners(indexer: Indexer, result: MatchResult, patterns, weight_maps=None, dataset=None, *, fit: bool = True):
    """Replace each solution by the best kinematic fit (or check) among it and its projection partners.

    The pattern fitted is the mean of the core positions of each weight map when the scan is
    given, else ``patterns[i]``. A partner's fit is taken when its score beats the solution's
    fit by more than ``partner_gain`` (relative), else the solution's own fit (a solution without
    partners is fitted alone). With ``fit=False``: :func:`_check_one`.

    Returns
    -------
    gains : numpy.ndarray
        (n,) the best partner's relative margin over the solution (0 without partners).
    margins, angles : numpy.ndarray
        (n,) the chosen rotation's relative margin over its best-scoring partner (negative when a
        partner scores higher) and their misorientation, degrees; NaN without partners.
    """
    o = indexer.options
    n = len(result.score)
    gains, margins, angles = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
    cores = None
    if dataset is not None and weight_maps is not None:
        cores = _read_positions(dataset, [_core_positions(w, o.partner_erosion) for w in weight_maps])
    for i in range(n):
        phase = int(result.phase[i])
        pattern = cores[i].mean(axis=0) if cores is not None and len(cores[i]) else patterns[i]
        if not fit:
            result.rotations[i], gains[i], margins[i], angles[i] = _check_one(indexer, pattern, result.rotations[i], phase)
            continue
        symmetry = indexer.templates[phase].symmetry
        rotations, scores = fit_partners(
            indexer.model, pattern, result.rotations[i], symmetry, phase=phase, q_max=indexer.grid.r_max, search_deg=o.resolution
        )
        if len(scores) < 2:
            result.rotations[i] = fit_alone(indexer.model, pattern, result.rotations[i], phase=phase, search_deg=o.resolution)[0]
            continue
        chosen, gains[i] = _pick(scores, float(o.partner_gain))
        result.rotations[i] = rotations[chosen]
        margins[i], angles[i] = _margin(rotations, scores, chosen, symmetry)
    return gains, margins, angles


def _pick(scores, partner_gain: float) -> tuple[int, float]:
    """The candidate taken (0, or the best partner when it beats candidate 0 by more than ``partner_gain``) and that partner's gain."""
    best = 1 + int(np.argmax(scores[1:]))
    gain = float((scores[best] - scores[0]) / abs(scores[0])) if scores[0] else 0.0
    if gain > partner_gain:
        log.info("a projection partner scores better by %.2f %%", 100 * gain)
        return best, gain
    return 0, gain


def _margin(rotations, scores, chosen: int, symmetry) -> tuple[float, float]:
    """Relative margin of the chosen candidate over the best other, and their misorientation (degrees)."""
    rest = [j for j in range(len(scores)) if j != chosen]
    runner = rest[int(np.argmax(scores[rest]))]
    margin = float((scores[chosen] - scores[runner]) / abs(scores[chosen])) if scores[chosen] else 0.0
    return margin, float(misorientation_angles(rotations[chosen], rotations[runner][None], symmetry)[0])


def _check_one(indexer: Indexer, pattern, rotation, phase: int):
    """The quick choice of one solution: the partner check (``partner_check``), then the tilt search of the choice (``tilt_search``).

    The check chooses among the rotation and its partners at the rotation's own tilt
    (:func:`.partners.check_partners`); the search then refines the choice's tilt
    (:meth:`.refine.PatternModel.tilt_search`), partners or not, and the margin over its
    partners is taken again at the searched tilt. Returns the rotation, the check's gain,
    the margin and the runner-up's angle (NaN, NaN without partners).
    """
    o = indexer.options
    model = indexer.model
    symmetry = indexer.templates[phase].symmetry
    rotation = np.asarray(rotation, dtype=np.float64)
    gain, margin, angle = 0.0, np.nan, np.nan
    prepared = model.prepare(pattern)
    if o.partner_check:
        rotations, scores = check_partners(model, pattern, rotation, symmetry, phase=phase, q_max=indexer.grid.r_max, prepared=prepared)
        if len(scores) > 1:
            chosen, gain = _pick(scores, float(o.partner_gain))
            rotation = rotations[chosen]
            margin, angle = _margin(rotations, scores, chosen, symmetry)
    if o.tilt_search:
        rotation, _ = model.tilt_search(prepared, rotation, phase)
        if o.partner_check:
            rotations, scores = check_partners(model, pattern, rotation, symmetry, phase=phase, q_max=indexer.grid.r_max, prepared=prepared)
            margin, angle = _margin(rotations, scores, 0, symmetry) if len(scores) > 1 else (np.nan, np.nan)
            if o.partner_switch and len(scores) > 1:
                rotation, margin, angle = _switch(indexer, pattern, prepared, rotation, (rotations, scores), phase, margin, angle)
            if o.partner_polish and len(scores) > 1 and margin < float(o.ambiguous_margin):
                rotation, margin, angle = _polish_partners(indexer, pattern, prepared, rotation, phase, margin, angle)
    return rotation, gain, margin, angle


def _polish_partners(indexer: Indexer, pattern, prepared, rotation, phase: int, margin: float, angle: float):
    """``partner_polish`` (:func:`.partners.polish_partners`): the best of the rotation and its partners, each polished.
    The region keeps the smaller margin, before or after (it was below ``ambiguous_margin``: it stays flagged).
    Returns the rotation, the margin and the runner-up's angle."""
    symmetry = indexer.templates[phase].symmetry
    rotations, scores = polish_partners(indexer.model, pattern, rotation, symmetry, phase=phase, q_max=indexer.grid.r_max, prepared=prepared)
    if len(scores) < 2:
        return rotation, margin, angle
    best = int(np.argmax(scores))
    if best:
        log.info("a projection partner, polished, scores above the choice by %.2f %%: taken", 100 * (scores[best] - scores[0]) / abs(scores[0]))
    after, angle_after = _margin(rotations, scores, best, symmetry)
    return (rotations[best], margin, angle) if margin <= after else (rotations[best], after, angle_after)


def _switch(indexer: Indexer, pattern, prepared, rotation, checked, phase: int, margin: float, angle: float):
    """``partner_switch`` (:func:`.partners.switch_partner`). A switched region keeps the smaller margin, the one at
    the tilt it left (negative: a partner scored above the choice there), so it is flagged ambiguous: its choice
    changed with the tilt. Returns the rotation, the margin and the runner-up's angle."""
    model, symmetry = indexer.model, indexer.templates[phase].symmetry
    taken, switched, rotations, scores = switch_partner(
        model, pattern, rotation, symmetry, phase=phase, q_max=indexer.grid.r_max,
        gain=float(indexer.options.partner_gain), prepared=prepared, checked=checked)
    if not switched:
        return rotation, margin, angle
    after, angle_after = _margin(rotations, scores, 0, symmetry) if len(scores) > 1 else (np.inf, np.nan)
    return (taken, margin, angle) if margin <= after else (taken, after, angle_after)


def _region_result(indexer: Indexer, results, components: MatchResult | None, dataset=None):
    """The regions' solutions, and the vote's counts when the positions voted (else None)."""
    if "/regions/mean_patterns" in results:
        means = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
        found = indexer.match(means)
        if not _voting(indexer, dataset, results, "/regions/maps"):
            return found, None
        return found, _vote(indexer, found, np.asarray(results["/regions/maps"]), dataset)
    if "/regions/table" in results and components is not None:
        table = results["/regions/table"]
        if len(table) and "component" in table.dtype.names:
            return _take(components, np.asarray(table["component"], dtype=np.int64)), None
    return None, None


def _positions(indexer: Indexer, dataset, rows_per_batch: int = 4) -> MatchResult:
    sy, sx = dataset.scan_shape
    parts = []
    for start in tqdm(range(0, sy, rows_per_batch), desc="index positions", unit="rows", leave=False):
        stop = min(sy, start + rows_per_batch)
        block = np.asarray(dataset.read_rows(start, stop), dtype=np.float32)
        parts.append(indexer.match(block.reshape(-1, *block.shape[2:])))
    fields = [f.name for f in dataclasses.fields(MatchResult)]
    return MatchResult(*(np.concatenate([getattr(p, name) for p in parts]) for name in fields))


def orientation_datasets(results, phases, *, dataset=None, per_position: bool = False, **options) -> dict:
    """The ``/orientations/*`` datasets of a run.

    Parameters
    ----------
    results : Results
        A run's results (component, region patterns and the calibration in ``attrs``).
    phases : list of str, path-like or orix Phase
        Built-in names (``'Ag'``, ``'spinel'``, ...) or CIF files.
    dataset : Dataset4D, optional
        The calibrated scan; needed for ``per_position`` and for the positions'
        vote (``vote_positions``; without it each region and component is the
        solution of its mean pattern alone).
    per_position : bool, default False
        Also index every position's pattern (slow; the per-pattern baseline).
    **options
        :class:`IndexOptions`.

    Returns
    -------
    dict
        HDF5 path -> array: ``phases``, ``components*``, ``regions*``,
        ``positions*`` (scan-shaped), ``boundaries`` and ``settings``.

    Raises
    ------
    ResultsError
        If the results hold no pattern to index.
    ConfigError, PhaseError
        For missing calibration, bad options or phases.
    """
    calibration = dict(results.attrs.get("calibration") or {})
    if dataset is not None:
        calibration.update({k: v for k, v in dataset.calibration.to_dict().items() if v is not None})
    shape = _pattern_shape(results, dataset)
    indexer = Indexer(
        phases,
        shape,
        q_pixel=calibration.get("q_pixel"),
        beam_energy=calibration.get("beam_energy"),
        origin=calibration.get("origin"),
        convergence_angle=calibration.get("convergence_angle"),
        options=IndexOptions(**options),
    )
    out = {
        "/orientations/phases": np.array(indexer.phase_names),
        "/orientations/symmetry": np.concatenate([t.symmetry for t in indexer.templates]),
        "/orientations/symmetry_phase": np.concatenate(
            [np.full(len(t.symmetry), p, np.int32) for p, t in enumerate(indexer.templates)]
        ),
    }
    components, kinds, votes = _component_result(indexer, results, dataset)
    if components is not None:
        if "/regions/mean_patterns" not in results:  # the regions' choice is the one scored; half the cost
            out.update(_partner_datasets(indexer, results, "components", components, dataset))
        out.update(_datasets("components", components))
        out["/orientations/components_source"] = kinds
        out.update(_vote_datasets("components", votes))
        out.update(_ambiguous_datasets(indexer, "components", out))
    regions, votes = _region_result(indexer, results, components, dataset)
    if regions is not None:
        out.update(_partner_datasets(indexer, results, "regions", regions, dataset))
        out.update(_datasets("regions", regions))
        out.update(_vote_datasets("regions", votes))
        out.update(_ambiguous_datasets(indexer, "regions", out))
        out.update(_sum_datasets(indexer, results, regions))
        if "/regions/maps" in results:
            out["/orientations/boundaries"] = boundary_table(
                np.asarray(results["/regions/maps"]), out["/orientations/regions"], regions.phase, indexer.templates
            )
    if components is None and regions is None and not per_position:
        raise ResultsError("the results hold no component or region patterns to index", "run with raw or pattern features")
    if per_position:
        if dataset is None:
            raise ConfigError("per-position indexing needs the scan", "give the dataset (or the input file) as well")
        positions = _positions(indexer, dataset)
        sy, sx = dataset.scan_shape
        for path, value in _datasets("positions", positions).items():
            out[path] = value.reshape(sy, sx, *value.shape[1:])
    settings = dataclasses.asdict(indexer.options)
    settings.update({"q_pixel": indexer.q_pixel, "r_min": indexer.grid.r_min, "r_max": indexer.grid.r_max})
    out["/orientations/settings"] = _settings_json(settings)
    return out


def _partner_datasets(indexer: Indexer, results, kind: str, result: MatchResult, dataset=None) -> dict:
    """With ``partners``, ``partner_check`` or ``tilt_search``: the choice among projection partners (:func:`_choose_partners`), ``{kind}_partner_gain``, ``_margin`` and ``_angle``."""
    path = f"/{kind}/mean_patterns"
    o = indexer.options
    if not (o.partners or o.partner_check or o.tilt_search) or path not in results:
        return {}
    maps = np.asarray(results[f"/{kind}/maps"]) if f"/{kind}/maps" in results else None
    gains, margins, angles = _choose_partners(
        indexer, result, np.asarray(results[path], dtype=np.float32), maps, dataset, fit=bool(o.partners)
    )
    return {
        f"/orientations/{kind}_partner_gain": gains.astype(np.float64),
        f"/orientations/{kind}_partner_margin": margins.astype(np.float64),
        f"/orientations/{kind}_partner_angle": angles.astype(np.float64),
    }


def _ambiguous_datasets(indexer: Indexer, kind: str, out: dict) -> dict:
    """``{kind}_ambiguous``: a projection partner within ``ambiguous_margin`` of the choice, or a vote without a majority."""
    n = len(out[f"/orientations/{kind}"])
    flagged = np.zeros(n, bool)
    margins = out.get(f"/orientations/{kind}_partner_margin")
    if margins is not None:
        flagged |= np.nan_to_num(margins, nan=np.inf) < float(indexer.options.ambiguous_margin)
    if f"/orientations/{kind}_votes" in out:
        flagged |= 2 * out[f"/orientations/{kind}_votes"] <= out[f"/orientations/{kind}_candidates"]
    return {f"/orientations/{kind}_ambiguous": flagged}


def _sum_datasets(indexer: Indexer, results, regions: MatchResult) -> dict:
    """``regions_second*`` and ``regions_sum_scores``: overlapped regions fitted as a sum of two crystals."""
    o = indexer.options
    if not o.overlap_sums or "/regions/mean_patterns" not in results or "/regions/table" not in results:
        return {}
    table = results["/regions/table"]
    if "overlapped" not in (table.dtype.names or ()):
        return {}
    overlapped = np.flatnonzero(np.asarray(table["overlapped"], dtype=bool))
    r = len(regions.phase)
    second = np.full((r, 3, 3), np.nan)
    second_phase = np.full(r, -1, np.int32)
    share = np.zeros(r)
    scores = np.full((r, 2), np.nan)
    patterns = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
    for i in tqdm(overlapped, desc="overlapped regions", unit="region", leave=False):
        fit = index_sums(indexer, patterns[i : i + 1], regions.rotations[i : i + 1], regions.phase[i : i + 1],
                         _take(regions, slice(i, i + 1)), gain=o.overlap_gain, min_share=o.overlap_min_share)[0]
        scores[i] = fit.single_score, fit.sum_score
        if fit.accepted:
            second[i], second_phase[i], share[i] = fit.second_rotation, fit.second_phase, fit.second_share
    quaternions = np.full((r, 4), np.nan)
    found = second_phase >= 0
    if found.any():
        quaternions[found] = matrices_to_quaternions(second[found]).reshape(-1, 4)
    log.info("%d of %d overlapped regions fit as a sum of two crystals", int(found.sum()), len(overlapped))
    return {
        "/orientations/regions_second": quaternions,
        "/orientations/regions_second_phase": second_phase,
        "/orientations/regions_second_share": share,
        "/orientations/regions_sum_scores": scores,
    }


def _vote_datasets(prefix: str, votes: dict | None) -> dict:
    if votes is None:
        return {}
    return {
        f"/orientations/{prefix}_votes": votes["votes"].astype(np.int32),
        f"/orientations/{prefix}_candidates": votes["candidates"].astype(np.int32),
        f"/orientations/{prefix}_spread": votes["spread"].astype(np.float64),
    }


def _settings_json(settings: dict) -> str:
    return json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in settings.items()})


def _pattern_shape(results, dataset) -> tuple[int, int]:
    if dataset is not None:
        return tuple(dataset.pattern_shape)
    for path in ("/components/mean_patterns", "/components/representative_patterns", "/regions/mean_patterns"):
        if path in results:
            return tuple(np.asarray(results[path]).shape[1:])
    shape = results.attrs.get("pattern_shape")
    if shape:
        return tuple(int(v) for v in shape)
    raise ResultsError("the results hold no component or region patterns to index", "run with raw or pattern features")
