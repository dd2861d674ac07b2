"""Parameter validation of the estimators from their ``_parameter_constraints`` (scikit-learn's style).

Each estimator declares its constraints once, as scikit-learn's estimators do;
:func:`check_params` checks them and turns a violation into one
:class:`~stemnmf.errors.ConfigError` line. Checks that involve several
parameters stay with the estimator.
"""

from __future__ import annotations

from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from stemnmf.errors import ConfigError

__all__ = ["check_params"]


def check_params(estimator) -> None:
    """Check ``estimator.get_params()`` against ``type(estimator)._parameter_constraints``.

    Raises
    ------
    ConfigError
        Naming the parameter, what it must be and what it got.
    """
    name = type(estimator).__name__
    try:
        validate_parameter_constraints(estimator._parameter_constraints, estimator.get_params(deep=False),
                                       caller_name=name)
    except InvalidParameterError as err:
        raise ConfigError(str(err).strip().splitlines()[0], f"see help(stemnmf.decompose.{name})") from None
