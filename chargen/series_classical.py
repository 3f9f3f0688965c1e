"""The classical forecasters a user would try first, beside the model in `series eval`: statsforecast's
AutoETS, AutoTheta and AutoARIMA (the optional `classical` extra).

Each is fitted once on the training part, as the model was trained on it, and then applied from every
origin of the backtest to the values before that origin (statsforecast's `forward`: the fitted
parameters, the state filtered through the new history), so all methods forecast from the same
origins, the same past and the same horizon.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from chargen.errors import first_line
from chargen.log import info

INSTALL_HINT = 'pip install "chargen[classical]"'
MODELS = ("AutoETS", "AutoTheta", "AutoARIMA")


@dataclass
class ClassicalForecasts:
    """One model's forecasts from every origin, data units."""

    name: str                                                  # e.g. "AutoETS (m=12)"
    values: np.ndarray                                         # (B, steps) the point forecasts
    intervals: dict[int, tuple[np.ndarray, np.ndarray]]        # {80: (low, high), 95: ...}, each (B, steps)


def available() -> bool:
    """Whether statsforecast can be imported; when not, one line on stderr saying how to install it."""
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        info(f"AutoETS, AutoTheta and AutoARIMA join the comparison once statsforecast is installed: {INSTALL_HINT}")
        return False
    return True


def classical_forecasts(values: np.ndarray, n_train: int, origins: np.ndarray, steps: int,
                        season: int | None) -> list[ClassicalForecasts]:
    """AutoETS, AutoTheta and AutoARIMA fitted on values[:n_train], forecasting `steps` values after each
    origin from values[:origin]. A model that cannot be fitted to this series is left out, with one line
    on stderr saying why. Needs statsforecast (see available())."""
    import statsforecast.models

    m = season or 1
    results = []
    for name in MODELS:
        model = getattr(statsforecast.models, name)(season_length=m)
        try:
            with warnings.catch_warnings():  # their convergence chatter is not the user's business here
                warnings.simplefilter("ignore")
                model.fit(values[:n_train].astype(np.float64))
                ahead = [model.forward(y=values[:origin].astype(np.float64), h=steps, level=[80, 95])
                         for origin in origins]
        except Exception as e:  # any failure of a third-party fit leaves out only that row
            info(f"{name} could not be fitted to this series ({first_line(e)}); it is left out of the table")
            continue
        results.append(ClassicalForecasts(
            f"{name} (m={m})" if m > 1 else name, np.stack([a["mean"] for a in ahead]),
            {level: (np.stack([a[f"lo-{level}"] for a in ahead]), np.stack([a[f"hi-{level}"] for a in ahead]))
             for level in (80, 95)}))
    return results
