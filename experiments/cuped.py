"""CUPED: less variance from what each user did before the experiment. Pure; standard library only.

Deng, Xu, Kohavi & Walker, "Improving the Sensitivity of Online Controlled Experiments by Utilizing
Pre-Experiment Data" (WSDM 2013), for ratio metrics through the delta method (Deng, Knoblich & Lu, KDD
2018). A user's behaviour before the experiment predicts their behaviour in it and cannot be changed by
the treatment, so subtracting the part of each arm's metric that the covariate predicts removes noise
and leaves the effect.

The covariate
    For each metric, user ``i``'s value of that metric over their outcomes before they entered the
    experiment, ``c_i`` (the evaluator snapshots it at the user's first counted interaction in the
    experiment, so it is fixed and pre-exposure). New users have none; they get ``c_i = 0`` and an
    indicator ``h_i = 0`` (else 1), a second covariate, so the adjustment neither needs nor invents a value
    for them. Both enter interaction-weighted, like the metric: ``X_1 = sum(n_i c_i) / sum(n_i)``,
    ``X_2 = sum(n_i h_i) / sum(n_i)``; :class:`~experiments.stats.RatioMoments` keeps the sums.

The adjusted effect
    Per arm ``R_cv = R - theta . (X - X_pooled)``, with one ``theta`` for both arms: the one that minimizes
    the variance of the relative effect ``R_cv,T / R_cv,C - 1``, from the arms' delta-method covariances of
    ``R`` and ``X`` with users as units. The covariate is balanced by randomization, so the adjustment
    has mean zero and the estimate stays consistent; its variance shrinks by about the squared correlation
    between a user's metric and their covariate.

Anytime validity
    The adjusted estimate and its plug-in variance go into the same normal-mixture test
    (:func:`experiments.stats.sequential_test`): the asymptotic confidence sequence holds for a
    regression-adjusted estimator too (Lindon, Ham, Tingley & Bojinov, "Anytime-Valid Linear Models and
    Regression Adjusted Causal Inference in Randomized Experiments", 2022). The A/A simulation in
    ``tests/unit/test_experiment_cuped.py`` checks it at every look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.stats import Effect, RatioMoments, relative_effect

#: Two numbers this close (relative) are taken as equal when deciding that a covariate carries nothing.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm's delta-method (co)variances of ``R`` and the covariates ``X_1, X_2``."""

    mean: float
    x: tuple[float, float]
    var_y: float
    cov_yx: tuple[float, float]
    cov_xx: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def of(cls, m: RatioMoments) -> _Arm | None:
        if m.users < 2 or m.n <= 0:
            return None
        f = m.users / (m.users - 1) / (m.n * m.n)
        r, x1, x2 = m.y / m.n, m.nc / m.n, m.nh / m.n
        s_yy = m.yy - 2 * r * m.ny + r * r * m.nn
        s_11 = m.nncc - 2 * x1 * m.nnc + x1 * x1 * m.nn
        s_22 = m.nnh - 2 * x2 * m.nnh + x2 * x2 * m.nn
        s_12 = m.nnc - x2 * m.nnc - x1 * m.nnh + x1 * x2 * m.nn
        s_y1 = m.nyc - x1 * m.ny - r * m.nnc + r * x1 * m.nn
        s_y2 = m.nyh - x2 * m.ny - r * m.nnh + r * x2 * m.nn
        return cls(
            mean=r,
            x=(x1, x2),
            var_y=max(s_yy, 0.0) * f,
            cov_yx=(s_y1 * f, s_y2 * f),
            cov_xx=((max(s_11, 0.0) * f, s_12 * f), (s_12 * f, max(s_22, 0.0) * f)),
        )

    def adjusted_variance(self, theta: tuple[float, float]) -> float:
        t1, t2 = theta
        (a, b), (_, d) = self.cov_xx
        quadratic = t1 * t1 * a + 2 * t1 * t2 * b + t2 * t2 * d
        return max(self.var_y - 2 * (t1 * self.cov_yx[0] + t2 * self.cov_yx[1]) + quadratic, 0.0)


def _solve(a: tuple[tuple[float, float], tuple[float, float]], b: tuple[float, float]) -> tuple[float, float]:
    """``theta = a^-1 b`` for a 2x2 covariance ``a``, dropping a covariate with no variance (or one that
    is a copy of the other); ``(0, 0)`` when neither has any."""
    (a11, a12), (_, a22) = a
    scale = max(a11, a22)
    if scale <= 0:
        return 0.0, 0.0
    det = a11 * a22 - a12 * a12
    if a11 > _EPS * scale and a22 > _EPS * scale and det > _EPS * a11 * a22:
        return (a22 * b[0] - a12 * b[1]) / det, (a11 * b[1] - a12 * b[0]) / det
    if a11 >= a22:
        return b[0] / a11, 0.0
    return 0.0, b[1] / a22


@dataclass(frozen=True, slots=True)
class CupedEffect:
    """The CUPED-adjusted relative effect, the plain one, the coefficients used and the variance saved.

    ``variance_reduction = 1 - Var(adjusted) / Var(plain)``: 0 when no user has a pre-experiment value.
    """

    effect: Effect
    plain: Effect
    theta: tuple[float, float]
    variance_reduction: float


def cuped_relative_effect(control: RatioMoments, treatment: RatioMoments) -> CupedEffect:
    """``mean_T / mean_C - 1`` adjusted for the users' pre-experiment values (module docstring).

    Falls back to the plain effect (``theta = (0, 0)``) when neither arm has a covariate or an arm has
    fewer than two users.
    """
    plain = relative_effect(control, treatment)
    c, t = _Arm.of(control), _Arm.of(treatment)
    if c is None or t is None or not (control.has_covariate or treatment.has_covariate) or c.mean <= 0:
        return CupedEffect(plain, plain, (0.0, 0.0), 0.0)
    # The relative effect's variance weighs the arms by these (delta method, see stats.relative_effect).
    g_t, g_c = 1.0 / c.mean**2, t.mean**2 / c.mean**4
    a = tuple(tuple(g_t * t.cov_xx[i][j] + g_c * c.cov_xx[i][j] for j in range(2)) for i in range(2))
    b = (g_t * t.cov_yx[0] + g_c * c.cov_yx[0], g_t * t.cov_yx[1] + g_c * c.cov_yx[1])
    theta = _solve(((a[0][0], a[0][1]), (a[1][0], a[1][1])), b)
    n = control.n + treatment.n
    pooled = ((control.nc + treatment.nc) / n, (control.nh + treatment.nh) / n)

    def adjusted(arm: _Arm) -> float:
        return arm.mean - theta[0] * (arm.x[0] - pooled[0]) - theta[1] * (arm.x[1] - pooled[1])

    m_c, m_t = adjusted(c), adjusted(t)
    if not (m_c > 0 and math.isfinite(m_t)):
        return CupedEffect(plain, plain, (0.0, 0.0), 0.0)
    variance = t.adjusted_variance(theta) / m_c**2 + m_t**2 * c.adjusted_variance(theta) / m_c**4
    effect = Effect(m_t / m_c - 1.0, variance)
    reduction = 1.0 - variance / plain.variance if plain.estimable else 0.0
    return CupedEffect(effect, plain, theta, reduction)


__all__ = ["CupedEffect", "cuped_relative_effect"]
