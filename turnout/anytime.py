"""Anytime-valid statistics for the sequential canary judge: e-processes and confidence sequences.

Plain Python with numpy/scipy, no I/O. "Anytime-valid" means the guarantee holds however often
and whenever one looks: by Ville's inequality, a nonnegative supermartingale E_t with E_0 = 1
under the null crosses 1/alpha with probability at most alpha, *ever*. So a judge may check every
second across every stage and still abort a healthy canary with probability at most alpha.

Two tools:

`RateRatioEProcess` — is the canary's event rate (5xx per request, or "slower than stable's p95
bucket" per observation) above the stable's? Following Lindon, Sanden & Shirikian, "Rapid
Regression Detection in Software Deployments through Sequential Testing" (KDD 2022) and Lindon &
Malek, "Anytime-valid inference for multinomial count data" (NeurIPS 2022): conditional on the
number of events x_i in a measurement increment i and on each slot's exposure (requests) n_c, n_s,
the canary's share of the events is Binomial(x_i, θ_i) with θ_i = ρ n_c / (ρ n_c + n_s), where ρ is
the canary/stable rate ratio (exact for Poisson counts). Against a fixed ρ the likelihood ratio
of one increment is ρ^{x_c} / (1 − θ0_i + θ0_i ρ)^{x_i} with θ0_i = n_c / (n_c + n_s); its mean is
exactly 1 under ρ = 1 and at most 1 for any ρ' ≤ 1 when ρ ≥ 1 (the mean is increasing in the
true share). With binomial (not Poisson) counts the conditional law is hypergeometric, which is
smaller in convex order than the binomial (Hoeffding 1963), and ρ^x is convex: still ≤ 1. The
product over increments is therefore a test supermartingale for H0: ρ ≤ 1, and so is a mixture
over a grid of ρ ≥ 1 with prior weights (a discrete mixture of supermartingales). The mixture is
what makes the test adapt to the size of the regression without choosing it in advance.

`beta_binomial_cs` — a confidence sequence for one slot's rate: Robbins' beta-binomial mixture
martingale M_t(p) = B(a + S, b + F) / B(a, b) / (p^S (1 − p)^F) (Robbins 1970; Howard, Ramdas,
McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.
2021, sec. 3.2) is a test martingale for the true p, so {p : M_t(p) < 1/alpha} covers p at every t
with probability ≥ 1 − alpha. `rate_difference_cs` combines two at alpha/2 each (a union bound).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaln

__all__ = ["RateRatioEProcess", "beta_binomial_cs", "rate_difference_cs", "DEFAULT_RATIOS"]

#: Rate ratios the mixture puts its (equal) prior weight on: from a 10 % to a 100-fold increase.
DEFAULT_RATIOS = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)


class RateRatioEProcess:
    """Mixture e-process for H0: canary event rate ≤ stable event rate, fed increment by increment.

    `update(x_c, n_c, x_s, n_s)` adds one increment (events and exposures per slot, all ≥ 0);
    `e_value` is the current mixture likelihood ratio (1 before any data), `p_value` the
    anytime-valid p-value min(1, 1 / max e so far). Reject H0 at level alpha once e ≥ 1/alpha.
    """

    def __init__(self, ratios: tuple[float, ...] = DEFAULT_RATIOS):
        if not ratios or min(ratios) < 1:
            raise ValueError("the mixture's rate ratios must be >= 1 (the alternative is 'canary worse')")
        self.log_rho = np.log(np.asarray(ratios, dtype=float))
        self.log_w = np.full(len(ratios), -math.log(len(ratios)))
        self.log_lr = np.zeros(len(ratios))
        self.log_e = 0.0
        self.max_log_e = 0.0

    def update(self, x_c: float, n_c: float, x_s: float, n_s: float) -> float:
        """Add one increment; return the e-value. An increment without exposure on both slots adds nothing."""
        if min(x_c, n_c, x_s, n_s) < 0:
            raise ValueError(f"negative counts in an increment ({x_c}, {n_c}, {x_s}, {n_s}): restart the sums instead")
        x = x_c + x_s
        if x <= 0 or n_c <= 0 or n_s <= 0:
            return self.e_value  # no events, or one slot saw no traffic: the conditional test has nothing to say
        theta0 = n_c / (n_c + n_s)
        self.log_lr += x_c * self.log_rho - x * np.log1p(theta0 * np.expm1(self.log_rho))
        terms = self.log_w + self.log_lr
        top = float(terms.max())  # log-sum-exp by hand: scipy's costs a millisecond per call
        self.log_e = top + math.log(float(np.exp(terms - top).sum()))
        self.max_log_e = max(self.max_log_e, self.log_e)
        return self.e_value

    @property
    def e_value(self) -> float:
        """The mixture e-value now."""
        return math.exp(min(self.log_e, 700.0))

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: 1 / the largest e-value seen (capped at 1)."""
        return min(1.0, math.exp(-self.max_log_e))


_GRID = 1 / (1 + np.exp(-np.linspace(-16.0, 16.0, 801)))  # p from ~1e-7 to 1 - 1e-7, even in logit


def beta_binomial_cs(
    successes: float, trials: float, alpha: float, a: float = 0.5, b: float = 0.5
) -> tuple[float, float]:
    """(lower, upper) of the beta-binomial mixture confidence sequence for a proportion at level 1 − alpha.

    Evaluated on a fine logit grid and widened to the neighbouring grid points, so the interval
    only errs on the safe (wider) side. (0, 1) before any trial.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be within (0, 1), got {alpha}")
    s, f = float(successes), float(trials) - float(successes)
    if trials <= 0:
        return 0.0, 1.0
    if s < 0 or f < 0:
        raise ValueError(f"{successes} successes out of {trials} trials is not a proportion")
    log_m = betaln(a + s, b + f) - betaln(a, b) - s * np.log(_GRID) - f * np.log1p(-_GRID)
    inside = np.nonzero(log_m < math.log(1 / alpha))[0]
    if inside.size == 0:  # cannot happen for the MLE's neighbourhood; be safe
        return 0.0, 1.0
    lo, hi = inside[0], inside[-1]
    return (0.0 if lo == 0 else float(_GRID[lo - 1])), (1.0 if hi == len(_GRID) - 1 else float(_GRID[hi + 1]))


def rate_difference_cs(x_c: float, n_c: float, x_s: float, n_s: float, alpha: float) -> tuple[float, float]:
    """Confidence sequence for canary rate − stable rate (each slot's sequence at alpha/2)."""
    lc, uc = beta_binomial_cs(x_c, n_c, alpha / 2)
    ls, us = beta_binomial_cs(x_s, n_s, alpha / 2)
    return lc - us, uc - ls
