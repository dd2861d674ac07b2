"""Electron scattering factors and the amorphous-carbon background.

Atomic scattering factors use the five-Gaussian parametrisation

    f(s) = sum_i a_i exp(-b_i s^2),   s = sin(theta) / lambda = g / 2   (Å^-1),

with f in Å (non-relativistic; multiply by the Lorentz factor gamma for the
beam energy). The coefficients for Ag and C below are the published values of

    L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan, "Robust parameterization of
    elastic and absorptive electron atomic scattering factors",
    Acta Cryst. A52 (1996) 257-276; reproduced in International Tables for
    Crystallography Vol. C (2006), Table 4.3.2.2 (neutral atoms, 0 <= s <= 2 Å^-1).

Other elements (for structures read from a CIF) use the Lobato & Van Dyck
parametrisation (Acta Cryst. A70 (2014) 636-649) shipped with diffsims, when
diffsims is installed.

The amorphous-carbon background is kinematic: n t |gamma f_C(q)|^2 S(q) lambda^2
per unit of reciprocal area, with a model structure factor S(q) whose two broad
maxima sit at the first two diffuse rings of evaporated amorphous carbon
(d ~ 2.1 Å and ~ 1.2 Å) and which falls towards small q.
"""

from __future__ import annotations

import math

import numpy as np

from stemnmf.errors import ConfigError

__all__ = [
    "PENG1996",
    "scattering_factor",
    "lorentz_factor",
    "amorphous_structure_factor",
    "amorphous_intensity",
    "amorphous_scattered_fraction",
]

#: Peng et al. (1996) / International Tables C Table 4.3.2.2: element -> (a_1..a_5 in Å, b_1..b_5 in Å^2).
PENG1996: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "Ag": ((0.6377, 1.3790, 2.8294, 2.3631, 1.4553), (0.2466, 1.6974, 5.7656, 20.0943, 76.7372)),
    "C": ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575), (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)),
}

#: Electron rest energy in keV.
REST_ENERGY_KEV = 510.99895

#: Amorphous carbon: number density for 2.0 g/cm^3 (atoms per Å^3).
CARBON_DENSITY = 2.0 / 12.011 * 0.602214076

# Model S(q) of amorphous carbon: (amplitude, centre q in 1/Å, width in 1/Å) of its diffuse maxima.
_AC_PEAKS = ((1.0, 0.47, 0.05), (0.5, 0.85, 0.07))
_AC_LOW_Q = (0.9, 0.30)  # depth of the dip towards q = 0 (S(0) = 0.1) and its width


def lorentz_factor(beam_energy_kev: float) -> float:
    """gamma = 1 + E / (m0 c^2) for a beam energy in keV."""
    return 1.0 + beam_energy_kev / REST_ENERGY_KEV


def _lobato_coefficients(element: str):
    try:
        from diffsims.utils.lobato_scattering_params import ATOMIC_SCATTERING_PARAMS_LOBATO
    except ImportError:
        return None
    params = ATOMIC_SCATTERING_PARAMS_LOBATO.get(element)
    return None if params is None else np.asarray(params, dtype=np.float64)


def scattering_factor(element: str, g) -> np.ndarray:
    """Electron atomic scattering factor f(g) in Å (non-relativistic).

    Parameters
    ----------
    element : str
        Chemical symbol, e.g. ``'Ag'``.
    g : float or array_like
        Length of the scattering vector in 1/Å (g = 2 sin(theta) / lambda).

    Returns
    -------
    numpy.ndarray
        f in Å, shaped like ``g``.

    Raises
    ------
    ConfigError
        If no parametrisation is known for the element.
    """
    g = np.asarray(g, dtype=np.float64)
    symbol = element.strip().capitalize()
    if symbol in PENG1996:
        a, b = (np.asarray(v) for v in PENG1996[symbol])
        s2 = (g / 2.0) ** 2
        return np.sum(a * np.exp(-np.multiply.outer(s2, b)), axis=-1)
    coeffs = _lobato_coefficients(symbol)
    if coeffs is None:
        raise ConfigError(
            f"no electron scattering factors for element {element!r}",
            "install the crystal extra (pip install 'stemnmf[crystal]') for all elements; Ag and C are built in",
        )
    a, b = coeffs[:, 0], coeffs[:, 1]
    bg2 = np.multiply.outer(g**2, b)
    return np.sum(a * (2.0 + bg2) / (1.0 + bg2) ** 2, axis=-1)


def amorphous_structure_factor(q) -> np.ndarray:
    """Model structure factor S(q) of amorphous carbon (q in 1/Å), tending to 1."""
    q = np.asarray(q, dtype=np.float64)
    depth, width = _AC_LOW_Q
    s = 1.0 - depth * np.exp(-((q / width) ** 2))
    for amplitude, centre, sigma in _AC_PEAKS:
        s = s + amplitude * np.exp(-0.5 * ((q - centre) / sigma) ** 2)
    return s


def amorphous_intensity(q, beam_energy_kev: float, wavelength: float) -> np.ndarray:
    """Fraction of the beam scattered per Å of amorphous carbon per (1/Å)^2 of detector at q."""
    gamma = lorentz_factor(beam_energy_kev)
    f = gamma * scattering_factor("C", q)
    return CARBON_DENSITY * f**2 * amorphous_structure_factor(q) * wavelength**2


def amorphous_scattered_fraction(beam_energy_kev: float, wavelength: float, q_max: float = 4.0) -> float:
    """Fraction of the beam scattered out of the central beam per Å of amorphous carbon.

    Integrates :func:`amorphous_intensity` over the detector plane up to ``q_max``
    (the parametrisation holds to s = 2 Å^-1, q = 4 Å^-1).
    """
    q = np.linspace(0.0, q_max, 4001)
    integrand = amorphous_intensity(q, beam_energy_kev, wavelength) * 2.0 * math.pi * q
    return float(np.trapezoid(integrand, q))
