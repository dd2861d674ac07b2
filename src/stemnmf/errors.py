"""Exceptions raised by stemnmf.

Every error a user can cause carries one line that names what is wrong and how
to fix it. The command line prints that line and exits with status 2; the
Python API raises the specific class so callers can catch it.
"""

from __future__ import annotations

__all__ = [
    "StemNMFError",
    "InputError",
    "FormatError",
    "ScanShapeError",
    "PhaseError",
    "DataValueError",
    "CalibrationError",
    "ConfigError",
    "ResultsError",
    "MemoryBudgetError",
    "SchedulerError",
]


class StemNMFError(Exception):
    """Base class of all errors stemnmf raises for bad input or options.

    Parameters
    ----------
    problem : str
        What is wrong, e.g. ``"file 'scan.xyz' has an unknown extension '.xyz'"``.
    fix : str, optional
        How to fix it, e.g. ``"convert it to .h5 or .npy"``.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.line)

    @property
    def line(self) -> str:
        """The one-line message: the problem, then the fix."""
        text = self.problem.rstrip(". ")
        if self.fix:
            text += "; " + self.fix.rstrip(". ")
        return text.replace("\n", " ")


class InputError(StemNMFError, ValueError):
    """An input file or path cannot be used (missing, unreadable, empty)."""


class FormatError(InputError):
    """A file's format is unknown, unsupported, truncated or holds no 4D data."""


class ScanShapeError(InputError):
    """The scan shape is missing or does not fit the number of frames."""


class PhaseError(InputError):
    """A crystal phase cannot be used (unknown name, unreadable or empty CIF file)."""


class DataValueError(StemNMFError, ValueError):
    """Array values cannot be used as given (NaN, Inf, negatives, overflow, empty)."""


class CalibrationError(StemNMFError, ValueError):
    """A calibration step cannot be done on this data (no beam, no ring, empty mask)."""


class ConfigError(StemNMFError, ValueError):
    """An option or configuration value is invalid."""


class ResultsError(StemNMFError):
    """A results file is missing, incomplete or would overwrite existing output."""


class MemoryBudgetError(StemNMFError, MemoryError):
    """The memory budget is too small for the smallest unit of work."""


class SchedulerError(StemNMFError, ConnectionError):
    """A dask.distributed scheduler cannot be reached or the cluster failed."""
