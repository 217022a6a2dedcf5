"""BayesCap: a small post-hoc head that puts a generalized-Gaussian around a frozen global descriptor.

The head reads a descriptor ȳ (D) and predicts, per dimension, a reconstruction ỹ, a scale α > 0 and
a shape β > 0. Trained cross-view (BCC), the density exp(-(|y - ỹ| / α)^β) β / (2 α Γ(1/β)) describes
where the descriptor y of *another view of the same place* lies, so its variance
α² Γ(3/β) / Γ(1/β) says how far a revisit's descriptor may drift from this one.

Loss per pair (ȳ, y), summed over dimensions and averaged over the batch:

    λ1 |ỹ - ȳ| + λ2 [ (|ỹ - y| / α)^β - log(β / α) + log Γ(1/β) ]

This is the true power form: the negative log-likelihood of the generalized Gaussian up to the
constant log 2. The authors' released BayesCap loss replaces the power (r / α)^β by a term linear in
β; that is no longer a likelihood (its minimiser over β runs to the clamp, and the predicted
variance then means nothing), so it is not used here. The power is computed as
exp(β (log(r + eps) - log α)) with the exponent clamped, so identical inputs (r = 0) and extreme
scales give finite values and gradients.

Descriptors are L2-normalised, so each of D dimensions is ~1/sqrt(D) in size; the head works on
sqrt(D)·ȳ (unit scale per dimension) and reports variances back in descriptor units.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_CONF = {
    "hidden": 256,  # width of the two hidden layers (4.3 M parameters, 17 MB, for 4096-d descriptors)
    "alpha_min": 1e-3,  # floor of the scale α (unit-scale units)
    "beta_min": 0.2,  # shape range: β < 0.2 or > 8 adds nothing but numerical trouble
    "beta_max": 8.0,
    "lambda_identity": 1.0,  # λ1: reconstruct the input (keeps ỹ on the frozen embedding)
    "lambda_likelihood": 1e-2,  # λ2: generalized-Gaussian NLL of the other view
}
EPS = 1e-6
MAX_LOG_POWER = 30.0  # (r / α)^β is clamped at e^30 before the sum


class BayesCapHead(nn.Module):
    """B x D descriptors -> (ỹ, α, β), each B x D; ỹ and α in descriptor units."""

    def __init__(self, dim: int, hidden: int = DEFAULT_CONF["hidden"], alpha_min: float = DEFAULT_CONF["alpha_min"],
                 beta_min: float = DEFAULT_CONF["beta_min"], beta_max: float = DEFAULT_CONF["beta_max"]):
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"dim and hidden must be positive, got {dim} and {hidden}")
        if not 0 < beta_min < beta_max or alpha_min <= 0:
            raise ValueError(f"need 0 < beta_min < beta_max and alpha_min > 0, got {beta_min}, {beta_max}, {alpha_min}")
        self.dim, self.alpha_min, self.beta_min, self.beta_max = dim, alpha_min, beta_min, beta_max
        self.scale = math.sqrt(dim)
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.mean = nn.Linear(hidden, dim)
        self.alpha = nn.Linear(hidden, dim)
        self.beta = nn.Linear(hidden, dim)
        nn.init.zeros_(self.beta.weight)
        nn.init.constant_(self.beta.bias, math.log(math.expm1(2.0 - beta_min)))  # start Gaussian (β = 2)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"BayesCap head expects B x {self.dim} descriptors, got {tuple(y.shape)}")
        x = y * self.scale
        h = self.trunk(x)
        mean = (x + self.mean(h)) / self.scale  # residual: starts at the identity
        alpha = (F.softplus(self.alpha(h)) + self.alpha_min) / self.scale
        beta = (F.softplus(self.beta(h)) + self.beta_min).clamp(max=self.beta_max)
        return mean, alpha, beta


def generalized_gaussian_nll(target: torch.Tensor, mean: torch.Tensor, alpha: torch.Tensor,
                             beta: torch.Tensor) -> torch.Tensor:
    """Per-element (|target - mean| / α)^β - log(β / α) + log Γ(1/β) (the NLL without log 2)."""
    residual = (target - mean).abs()
    log_power = (beta * (torch.log(residual + EPS) - torch.log(alpha))).clamp(max=MAX_LOG_POWER)
    return torch.exp(log_power) - torch.log(beta) + torch.log(alpha) + torch.lgamma(1.0 / beta)


def bayescap_loss(head_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], own: torch.Tensor,
                  other: torch.Tensor, lambda_identity: float = DEFAULT_CONF["lambda_identity"],
                  lambda_likelihood: float = DEFAULT_CONF["lambda_likelihood"]) -> torch.Tensor:
    """λ1 Σ|ỹ - ȳ| + λ2 Σ NLL(y | ỹ, α, β), summed over dimensions, averaged over the batch.

    Both terms are computed in unit-scale units (descriptor × sqrt(D)), where the head learns.
    own: the descriptors the head read (ȳ); other: descriptors of other views of the same places (y).
    """
    mean, alpha, beta = head_out
    scale = math.sqrt(own.shape[1])
    identity = (mean - own).abs().sum(dim=1) * scale
    nll = generalized_gaussian_nll(other * scale, mean * scale, alpha * scale, beta).sum(dim=1)
    return (lambda_identity * identity + lambda_likelihood * nll).mean()


def variance(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-dimension variance of the generalized Gaussian: α² Γ(3/β) / Γ(1/β)."""
    return alpha.square() * torch.exp(torch.lgamma(3.0 / beta) - torch.lgamma(1.0 / beta))


def fit_head(descriptors: np.ndarray, pairs: np.ndarray, conf: dict | None = None, epochs: int = 60,
             batch_size: int = 64, lr: float = 3e-4, weight_decay: float = 1e-4, seed: int = 0,
             val_pairs: np.ndarray | None = None, log=None) -> tuple[BayesCapHead, dict]:
    """Train a head on cross-view pairs of map descriptors.

    descriptors: N x D float32 (the map's). pairs: P x 2 row indices of two views of one place; each
    pair is used both ways (a reconstructs itself and is scored against b, and b against a).
    Returns the head (eval mode, CPU) and training statistics (losses per epoch, on val_pairs too).
    """
    conf = {**DEFAULT_CONF, **(conf or {})}
    descriptors = np.asarray(descriptors, np.float32)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        raise ValueError("no positive pairs to train the BayesCap head on")
    if not np.isfinite(descriptors).all():
        raise ValueError("map descriptors contain NaN or infinite values")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    head = BayesCapHead(descriptors.shape[1], conf["hidden"], conf["alpha_min"], conf["beta_min"], conf["beta_max"])
    table = torch.from_numpy(descriptors)
    both_ways = torch.from_numpy(np.concatenate([pairs, pairs[:, ::-1]]).copy())
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    weights = (conf["lambda_identity"], conf["lambda_likelihood"])

    def pair_loss(batch: torch.Tensor) -> torch.Tensor:
        return bayescap_loss(head(table[batch[:, 0]]), table[batch[:, 0]], table[batch[:, 1]], *weights)

    stats = {"train_loss": [], "val_loss": [], "pairs": int(len(pairs)), "epochs": epochs}
    for epoch in range(epochs):
        head.train()
        order = both_ways[torch.randperm(len(both_ways), generator=generator)]
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = pair_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"BayesCap loss became {loss.item()} at epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 10.0)
            optimizer.step()
            total += loss.item() * len(batch)
        stats["train_loss"].append(total / len(order))
        if val_pairs is not None and len(val_pairs):
            head.eval()
            with torch.no_grad():
                val = torch.from_numpy(np.asarray(val_pairs, np.int64).reshape(-1, 2))
                stats["val_loss"].append(float(pair_loss(val)))
        if log is not None and (epoch % 10 == 0 or epoch == epochs - 1):
            log(epoch, stats)
    head.eval()
    return head, stats


def descriptor_uncertainty(head: BayesCapHead, descriptors: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """N x D descriptors -> N mean predicted variances (descriptor units). NaN rows give NaN."""
    descriptors = np.asarray(descriptors, np.float32).reshape(-1, head.dim)
    out = np.full(len(descriptors), np.nan, np.float64)
    finite = np.isfinite(descriptors).all(axis=1)
    rows = np.flatnonzero(finite)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            _, alpha, beta = head(torch.from_numpy(descriptors[chunk]))
            out[chunk] = variance(alpha.double(), beta.double()).mean(dim=1).numpy()
    return out
