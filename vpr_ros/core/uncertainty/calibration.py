"""Calibrators: confidence features of a hypothesis -> probability that it shows the query's place.

`logistic`: L2-regularised logistic regression on standardised features (Platt scaling when there is
one feature). `isotonic`: the logistic score, then a monotone step function fitted by pool-adjacent-
violators, for when the logistic curve's shape is wrong; it needs more pairs to be stable.

Monotone in the evidence: the coefficient of every feature named in `increasing` (similarity, inliers,
pair likelihood, ...: features.INCREASING) is kept >= 0, so more evidence never lowers the probability.
A fit that would give one a negative weight (features that move together, a small calibration set) is
refitted with that weight held at 0 (an active set), and the isotonic step is monotone in the logit.

Acceptance by risk (`risk_threshold`): the calibrator keeps the probabilities it gave the wrong rows it
was fitted on and how many rows there were. Conformal risk control (Angelopoulos et al., 2022) with the
loss "accepted and wrong", which never grows as the threshold rises, then gives the lowest threshold whose
expected false-acceptance rate on one more exchangeable query is at most alpha:
(#wrong at or above it + 1) / (n + 1) <= alpha. The bound holds for queries like the calibration's (a
session of the same kind of revisit); on other conditions it is as good as the features' transfer
(docs/uncertainty.md measures it on conditions the calibration never saw).

A calibrator is plain numbers (to_json / from_json), stored in the map's uncertainty.json.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

KINDS = ("logistic", "isotonic")


@dataclass
class Calibrator:
    features: list[str]  # names of the feature columns, in order
    kind: str = "logistic"
    l2: float = 1e-2  # ridge weight on the (standardised) coefficients
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept: float = 0.0
    iso_x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # isotonic: logit breakpoints
    iso_y: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ... and probabilities there
    fitted_on: int = 0  # pairs it was fitted on
    positive_rate: float = float("nan")
    increasing: list[str] = field(default_factory=list)  # features whose coefficient stays >= 0
    full_precision: float = float("nan")  # lowest probability above which no fitted hypothesis was wrong
    wrong_probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the wrong fitted rows, sorted

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown calibrator kind {self.kind!r}; choose one of {KINDS}")
        if not self.features:
            raise ValueError("a calibrator needs at least one feature")
        self.increasing = [f for f in self.increasing if f in self.features]

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Calibrator":
        """x: P x F feature rows (finite), y: P booleans (is a true match)."""
        x = self._check(x)
        y = np.asarray(y, bool).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} feature rows for {len(y)} labels")
        if y.all() or not y.any():
            raise ValueError(f"calibration needs true and false matches; got {int(y.sum())} true of {len(y)} pairs")
        self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        self.std = np.where(self.std > 1e-9, self.std, 1.0)  # a constant feature gets weight ~0, not NaN
        xs = torch.from_numpy((x - self.mean) / self.std)
        target = torch.from_numpy(y.astype(np.float64))
        constrained = np.array([f in self.increasing for f in self.features])
        held = np.zeros(len(self.features), bool)  # coefficients fixed at 0
        for _ in range(len(self.features) + 1):
            coef, intercept = self._fit_logistic(xs, target, torch.from_numpy(~held))
            wrong = constrained & ~held & (coef < 0)
            if not wrong.any():
                break
            held |= wrong
        self.coef, self.intercept = coef, intercept
        if self.kind == "isotonic":
            self.iso_x, self.iso_y = _pool_adjacent_violators(self._logit(x), y)
        self.fitted_on, self.positive_rate = int(len(y)), float(y.mean())
        fitted = self.predict(x)
        self.full_precision = full_precision_threshold(fitted, y)
        self.wrong_probabilities = np.sort(fitted[~y])
        return self

    def risk_threshold(self, alpha: float) -> float:
        """The lowest probability threshold at which accepting keeps the expected share of queries accepted
        wrongly at most `alpha`, by conformal risk control over the fitted rows (module docstring); 1.0 when
        `alpha` is below what this many rows can certify (1 / (n + 1)), which then accepts nothing short of
        certainty."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if not len(self.wrong_probabilities):  # fitted before issue 41 (a fit always has wrong rows): its
            return float(np.nan_to_num(self.full_precision, nan=1.0))  # full-precision point, the rule it had
        n = self.fitted_on
        allowed = int(np.floor(alpha * (n + 1) - 1 + 1e-9))  # wrong rows that may lie at or above the threshold
        if n == 0 or allowed < 0:
            return 1.0
        wrong = self.wrong_probabilities[::-1]  # highest first
        if allowed >= len(wrong):
            return 0.0
        return float(min(np.nextafter(wrong[allowed], np.inf), 1.0))

    def _fit_logistic(self, xs: torch.Tensor, target: torch.Tensor, free: torch.Tensor) -> tuple[np.ndarray, float]:
        """Ridge logistic regression on standardised features; coefficients outside `free` stay 0."""
        w = torch.zeros(xs.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            coef = w[:-1] * free
            loss = F.binary_cross_entropy_with_logits(xs @ coef + w[-1], target) + self.l2 * coef.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return (w[:-1] * free).detach().numpy().copy(), float(w[-1].detach())

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P x F features -> P probabilities; rows with a NaN feature give NaN."""
        x = np.asarray(x, np.float64).reshape(-1, len(self.features))
        logit = self._logit(np.nan_to_num(x))
        if self.kind == "isotonic":
            prob = np.interp(logit, self.iso_x, self.iso_y)
        else:
            prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
        return np.where(np.isfinite(x).all(axis=1), prob, np.nan)

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.coef + self.intercept

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected P x {len(self.features)} features {self.features}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("calibration features contain NaN or infinite values")
        return x

    def to_json(self) -> dict:
        return {"features": self.features, "kind": self.kind, "l2": self.l2, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept,
                "iso_x": self.iso_x.tolist(), "iso_y": self.iso_y.tolist(), "fitted_on": self.fitted_on,
                "positive_rate": self.positive_rate, "increasing": self.increasing,
                "full_precision": self.full_precision, "wrong_probabilities": self.wrong_probabilities.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Calibrator":
        arrays = {k: np.asarray(data[k], np.float64) for k in ("mean", "std", "coef", "iso_x", "iso_y")}
        out = cls(list(data["features"]), data["kind"], float(data["l2"]), **arrays,
                  intercept=float(data["intercept"]), fitted_on=int(data["fitted_on"]),
                  positive_rate=float(data["positive_rate"]), increasing=list(data["increasing"]),
                  full_precision=float(data["full_precision"]),
                  wrong_probabilities=np.asarray(data.get("wrong_probabilities", []), np.float64))
        n = len(out.features)
        if any(len(arrays[k]) != n for k in ("mean", "std", "coef")) or len(out.iso_x) != len(out.iso_y):
            raise ValueError(f"calibrator arrays do not match its {n} features")
        if out.kind == "isotonic" and len(out.iso_x) == 0:
            raise ValueError("isotonic calibrator without breakpoints")
        return out


def full_precision_threshold(probability: np.ndarray, correct: np.ndarray) -> float:
    """The lowest probability p such that every hypothesis with probability >= p is right (1.0 when the most
    probable one is wrong): where the calibrated curve reaches full precision on its fitting set."""
    probability, correct = np.asarray(probability, np.float64), np.asarray(correct, bool)
    wrong = probability[~correct]
    above = probability[correct & (probability > (wrong.max() if len(wrong) else -np.inf))]
    return float(above.min()) if len(above) else 1.0


def _pool_adjacent_violators(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing step fit of y on score; returns breakpoints (block centres) and their values."""
    order = np.argsort(score, kind="stable")
    s, t = score[order], y[order].astype(np.float64)
    values, weights, lefts, rights = [], [], [], []
    for i in range(len(s)):
        values.append(t[i]), weights.append(1.0), lefts.append(s[i]), rights.append(s[i])
        while len(values) > 1 and values[-2] >= values[-1]:
            v, w, r = values.pop(), weights.pop(), rights.pop()
            lefts.pop()
            values[-1] = (values[-1] * weights[-1] + v * w) / (weights[-1] + w)
            weights[-1] += w
            rights[-1] = r
    centres = (np.asarray(lefts) + np.asarray(rights)) / 2
    return centres, np.asarray(values)
