"""Windows seen relative to their own level and season, and the quantile loss: what lets a forecast leave
the range of the values it was trained on, and say how sure it is.

A model trained on globally standardised values can only return to the range it has seen: a series with
a trend walks out of it (issue 14: air traffic forecast back at the training mean). Here each window is
re-centred on its own level, the mean of its last season, and the model predicts what comes after it as
a correction to the seasonal-naive forecast (the last season repeated):

    inputs  x (B, W)          scaled values (series_data.Scaler: log when the run models logs, / scale)
    level   (B, 1)            mean of the window's last m values (m = the season, 1 without one)
    base    (B, H)            the seasonal-naive forecast, relative to the level: x[W - m + (k mod m)] - level
    target  y - level - base  what the network learns: zero means "the last season again"

so a model that has learnt nothing forecasts the seasonal-naive values, a trend is a drift of the level
the network learns in relative terms, and every window looks alike whatever the height of the series
(ES-RNN's per-series level and season, N-BEATS's per-window view). The network also sees the season's
phase of each input value (0 at the value m before the forecast), so a window needs no fixed length.

The head predicts QUANTILES of each future value, trained with the pinball loss (MQ-RNN): the median
is the forecast, the outer pairs are the 80% and 95% prediction intervals. Quantiles fitted on the
training windows are too sure of themselves out of sample, so each interval is then widened (or
narrowed) by a margin measured on the validation windows, conformalised quantile regression (Romano et
al., 2019): the margin that would have made each interval hold its share of the validation values.
"""
from __future__ import annotations

import math

import numpy as np
import torch

QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)   # 95% interval, 80% interval, median
MEDIAN = QUANTILES.index(0.5)
INTERVALS = {80: (QUANTILES.index(0.1), QUANTILES.index(0.9)), 95: (QUANTILES.index(0.025), QUANTILES.index(0.975))}


def level_and_base(x: torch.Tensor, season: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, W) -> the level (B, 1) and the seasonal-naive base (B, H) relative to it."""
    last_season = x[:, -season:]                                  # (B, m)
    level = last_season.mean(dim=1, keepdim=True)
    ahead = torch.arange(horizon, device=x.device) % last_season.shape[1]
    return level, last_season[:, ahead] - level


def relative_inputs(x: torch.Tensor, level: torch.Tensor, season: int) -> torch.Tensor:
    """x (B, W) -> the network's inputs (B, W, 2): the values less the level, and the season's phase."""
    width = x.shape[1]
    phase = ((torch.arange(width, device=x.device) - width) % season).to(x.dtype) / season  # (W,)
    return torch.stack([x - level, phase.expand_as(x)], dim=-1)


def pinball_loss(prediction: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """prediction (..., H * Q) of the quantiles of each target value (..., H); the mean (or sum) pinball loss."""
    q = torch.tensor(QUANTILES, device=prediction.device, dtype=prediction.dtype)
    error = target.unsqueeze(-1) - prediction.unflatten(-1, (target.shape[-1], len(QUANTILES)))
    loss = torch.maximum(q * error, (q - 1) * error)
    # "sum": over the target values, averaged over the quantiles, so that sum / count is the mean
    return loss.sum() / len(QUANTILES) if reduction == "sum" else loss.mean()


def interval_margins(quantiles: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Validation quantiles (..., Q) and true values (...) -> the margin for each interval, in their units:
    the conformity score max(low - y, y - high) at the level's quantile (finite-sample corrected)."""
    margins = {}
    for level, (lo, hi) in INTERVALS.items():
        scores = np.maximum(quantiles[..., lo] - truth, truth - quantiles[..., hi]).ravel()
        rank = min(1.0, math.ceil((len(scores) + 1) * level / 100) / len(scores))
        margins[str(level)] = float(np.quantile(scores, rank))
    return margins


def calibrate(quantiles: np.ndarray, margins: dict[str, float] | None) -> np.ndarray:
    """Quantiles (..., Q) with each interval moved out by its margin (in by a negative one), kept in order;
    the median, the point forecast, never moves."""
    if not margins:
        return quantiles
    out = np.array(quantiles, dtype=np.float64)
    inner_low = inner_high = out[..., MEDIAN]  # a narrowed interval stops at the median, and 95% holds 80%
    for level, (lo, hi) in sorted(INTERVALS.items()):
        out[..., lo] = np.minimum(out[..., lo] - margins[str(level)], inner_low)
        out[..., hi] = np.maximum(out[..., hi] + margins[str(level)], inner_high)
        inner_low, inner_high = out[..., lo], out[..., hi]
    return out
