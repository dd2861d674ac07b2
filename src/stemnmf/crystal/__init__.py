"""Crystallography of the components: phases, templates, matching, orientations, boundaries.

Needs the ``crystal`` extra (orix and diffsims) for phases and templates;
matching, misorientations and scores are NumPy/SciPy.

    >>> import stemnmf
    >>> stemnmf.index("out", ["Ag"])      # doctest: +SKIP

Conventions: orientations are unit quaternions (w, x, y, z) rotating crystal
coordinates into the sample frame (x along scan columns, y along scan rows,
z along the beam). See ``docs/crystal.md``.
"""

from stemnmf.crystal.boundaries import BOUNDARY_DTYPE, boundary_table, reduced_misorientation, shared_boundaries
from stemnmf.crystal.export import crystal_map, orientation_map, save_ang
from stemnmf.crystal.indexing import IndexOptions, Indexer, index_patterns, orientation_datasets
from stemnmf.crystal.matching import MatchResult, misorientation_angles
from stemnmf.crystal.phases import BUILTIN_PHASES, load_phase, load_phases, require_crystal_extra
from stemnmf.crystal.rotations import matrices_to_quaternions, quaternions_to_matrices
from stemnmf.crystal.scores import best_matching_grains, orientation_scores
from stemnmf.crystal.templates import TemplateSet, make_templates
from stemnmf.crystal.workflow import ambiguous_regions, describe, index

__all__ = [
    "index",
    "describe",
    "ambiguous_regions",
    "index_patterns",
    "orientation_datasets",
    "IndexOptions",
    "Indexer",
    "MatchResult",
    "BUILTIN_PHASES",
    "load_phase",
    "load_phases",
    "require_crystal_extra",
    "TemplateSet",
    "make_templates",
    "misorientation_angles",
    "reduced_misorientation",
    "shared_boundaries",
    "boundary_table",
    "BOUNDARY_DTYPE",
    "orientation_scores",
    "best_matching_grains",
    "crystal_map",
    "orientation_map",
    "save_ang",
    "matrices_to_quaternions",
    "quaternions_to_matrices",
]
