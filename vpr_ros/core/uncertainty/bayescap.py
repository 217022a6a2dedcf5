"""BayesCap: a small post-hoc head that puts a generalized Gaussian around a frozen global descriptor.

The head reads a descriptor and predicts, per dimension of a low-rank view of it, a reconstruction ỹ,
a scale α > 0 and a shape β > 0. Trained cross-view (BCC), the density
exp(-(|y - ỹ| / α)^β) β / (2 α Γ(1/β)) describes where the descriptor y of *another view of the same
place* lies, so its variance α² Γ(3/β) / Γ(1/β) says how far a revisit's descriptor may drift.

**Low rank.** A map gives hundreds to thousands of training pairs; 4096 free scales and a 4096-wide
reconstruction cannot be learned from that (the first head learned per-dimension scales and almost no
dependence on its input). The head therefore works in the `rank` leading principal directions of
the descriptors it is trained on (a fixed projection stored with it), scaled to unit RMS per
coordinate: y -> x = P (y - c) / u. Everything below (ỹ, α, β, the loss, the variance) is in x units.

Loss per pair (x̄, x), summed over the rank dimensions and averaged over the batch:

    λ1 |ỹ - x̄| + λ2 [ (|ỹ - x| / α)^β - log(β / α) + log Γ(1/β) ]

This is the true power form: the negative log-likelihood of the generalized Gaussian up to the
constant log 2. The authors' released BayesCap loss replaces the power (r / α)^β by a term linear in
β; that is no longer a likelihood (its minimiser over β runs to the clamp, and the predicted
variance then means nothing), so it is not used here. The power is computed as
exp(β (log(r + eps) - log α)) with the exponent clamped, so identical inputs (r = 0) and extreme
scales give finite values and gradients.

**Pair likelihood.** What a loop closure needs is whether two descriptors show one place. Each
head's distribution describes where the other view of its place lies, so the mean per-dimension
log-likelihood of each embedding under the other's generalized Gaussian, averaged over both
directions (`pair_log_likelihood`; per hypothesis: UncertaintyModel.describe), scores the pair: high
when each lies where the other's head expects a revisit, low when either is outside.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_CONF = {
    "rank": 64,  # principal directions the head works in (fewer when fewer descriptors train it)
    "hidden": 128,  # width of the two hidden layers
    "alpha_min": 1e-3,  # floor of the scale α (x units)
    "beta_min": 0.2,  # shape range: β < 0.2 or > 8 adds nothing but numerical trouble
    "beta_max": 8.0,
    "lambda_identity": 1.0,  # λ1: reconstruct the input (keeps ỹ on the frozen embedding)
    "lambda_likelihood": 1.0,  # λ2: generalized-Gaussian NLL of the other view
}
HEAD_KEYS = ("rank", "hidden", "alpha_min", "beta_min", "beta_max")  # what a stored head is built from
EPS = 1e-6
MAX_LOG_POWER = 30.0  # (r / α)^β is clamped at e^30 before the sum


class BayesCapHead(nn.Module):
    """B x D descriptors -> (x, ỹ, α, β), each B x rank: the projected input and its generalized Gaussian."""

    def __init__(self, dim: int, rank: int = DEFAULT_CONF["rank"], hidden: int = DEFAULT_CONF["hidden"],
                 alpha_min: float = DEFAULT_CONF["alpha_min"], beta_min: float = DEFAULT_CONF["beta_min"],
                 beta_max: float = DEFAULT_CONF["beta_max"]):
        super().__init__()
        if dim < 1 or hidden < 1 or rank < 1:
            raise ValueError(f"dim, rank and hidden must be positive, got {dim}, {rank} and {hidden}")
        rank = min(rank, dim)
        if not 0 < beta_min < beta_max or alpha_min <= 0:
            raise ValueError(f"need 0 < beta_min < beta_max and alpha_min > 0, got {beta_min}, {beta_max}, {alpha_min}")
        self.dim, self.rank = dim, rank
        self.alpha_min, self.beta_min, self.beta_max = alpha_min, beta_min, beta_max
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("basis", torch.eye(rank, dim))  # rank x D, rows orthonormal
        self.register_buffer("unit", torch.ones(()))
        self.trunk = nn.Sequential(nn.Linear(rank, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.mean = nn.Linear(hidden, rank)
        self.alpha = nn.Linear(hidden, rank)
        self.beta = nn.Linear(hidden, rank)
        nn.init.zeros_(self.beta.weight)
        nn.init.constant_(self.beta.bias, math.log(math.expm1(2.0 - beta_min)))  # start Gaussian (β = 2)

    def fit_projection(self, descriptors: np.ndarray) -> None:
        """Principal directions of N x D descriptors (N > rank), and the unit that scales them to RMS 1."""
        x = torch.from_numpy(np.asarray(descriptors, np.float32))
        if len(x) <= self.rank:
            raise ValueError(f"{len(x)} descriptors cannot fit a rank-{self.rank} projection")
        centre = x.mean(dim=0)
        _, _, vt = torch.linalg.svd(x - centre, full_matrices=False)
        projected = (x - centre) @ vt[:self.rank].T
        self.centre.copy_(centre)
        self.basis.copy_(vt[:self.rank])
        self.unit.copy_(projected.square().mean().sqrt().clamp(min=1e-12))

    def project(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"BayesCap head expects B x {self.dim} descriptors, got {tuple(y.shape)}")
        return (y - self.centre) @ self.basis.T / self.unit

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.distribution(self.project(y))

    def distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected B x rank input -> (x, ỹ, α, β)."""
        h = self.trunk(x)
        mean = x + self.mean(h)  # residual: starts at the identity
        alpha = F.softplus(self.alpha(h)) + self.alpha_min
        beta = (F.softplus(self.beta(h)) + self.beta_min).clamp(max=self.beta_max)
        return x, mean, alpha, beta


def generalized_gaussian_nll(target: torch.Tensor, mean: torch.Tensor, alpha: torch.Tensor,
                             beta: torch.Tensor) -> torch.Tensor:
    """Per-element (|target - mean| / α)^β - log(β / α) + log Γ(1/β) (the NLL without log 2)."""
    residual = (target - mean).abs()
    log_power = (beta * (torch.log(residual + EPS) - torch.log(alpha))).clamp(max=MAX_LOG_POWER)
    return torch.exp(log_power) - torch.log(beta) + torch.log(alpha) + torch.lgamma(1.0 / beta)


def bayescap_loss(own: tuple[torch.Tensor, ...], other: torch.Tensor,
                  lambda_identity: float = DEFAULT_CONF["lambda_identity"],
                  lambda_likelihood: float = DEFAULT_CONF["lambda_likelihood"]) -> torch.Tensor:
    """λ1 Σ|ỹ - x̄| + λ2 Σ NLL(x | ỹ, α, β), summed over dimensions, averaged over the batch.

    own: the head's output (x̄, ỹ, α, β) for the descriptors it read; other: the projections x of other
    views of the same places."""
    x, mean, alpha, beta = own
    identity = (mean - x).abs().sum(dim=1)
    nll = generalized_gaussian_nll(other, mean, alpha, beta).sum(dim=1)
    return (lambda_identity * identity + lambda_likelihood * nll).mean()


def variance(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-dimension variance of the generalized Gaussian: α² Γ(3/β) / Γ(1/β)."""
    return alpha.square() * torch.exp(torch.lgamma(3.0 / beta) - torch.lgamma(1.0 / beta))


def fit_head(descriptors: np.ndarray, pairs: np.ndarray, conf: dict | None = None, epochs: int = 40,
             batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0,
             val_pairs: np.ndarray | None = None, log=None) -> tuple[BayesCapHead, dict]:
    """Train a head on cross-view pairs.

    descriptors: N x D float32 (map frames and views of them). pairs: P x 2 row indices of two views of
    one place; each pair is used both ways (a reconstructs itself and is scored against b, and b
    against a). The projection is fitted on the rows the pairs use; its rank is capped by their count.
    Returns the head (eval mode, CPU) and training statistics (losses per epoch, on val_pairs too).
    """
    conf = {**DEFAULT_CONF, **(conf or {})}
    descriptors = np.asarray(descriptors, np.float32)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        raise ValueError("no positive pairs to train the BayesCap head on")
    if not np.isfinite(descriptors).all():
        raise ValueError("descriptors contain NaN or infinite values")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    used = np.unique(pairs)
    rank = max(1, min(conf["rank"], len(used) - 1, descriptors.shape[1]))
    head = BayesCapHead(descriptors.shape[1], rank, conf["hidden"], conf["alpha_min"], conf["beta_min"],
                        conf["beta_max"])
    head.fit_projection(descriptors[used])
    with torch.no_grad():
        table = head.project(torch.from_numpy(descriptors))
    both_ways = torch.from_numpy(np.concatenate([pairs, pairs[:, ::-1]]).copy())
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    weights = (conf["lambda_identity"], conf["lambda_likelihood"])

    def pair_loss(batch: torch.Tensor) -> torch.Tensor:
        return bayescap_loss(head.distribution(table[batch[:, 0]]), table[batch[:, 1]], *weights)

    stats = {"train_loss": [], "val_loss": [], "pairs": int(len(pairs)), "epochs": epochs, "rank": rank}
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


def descriptor_uncertainty(head: BayesCapHead, descriptors: np.ndarray) -> np.ndarray:
    """N x D descriptors -> N mean predicted variances (x units). NaN rows give NaN."""
    descriptors = np.asarray(descriptors, np.float32).reshape(-1, head.dim)
    finite = np.isfinite(descriptors).all(axis=1)
    out = np.full(len(descriptors), np.nan, np.float64)
    if finite.any():
        with torch.inference_mode():
            _, _, alpha, beta = head(torch.from_numpy(descriptors[finite]))
            out[finite] = variance(alpha.double(), beta.double()).mean(dim=1).numpy()
    return out


def pair_log_likelihood(x_a: torch.Tensor, dist_a: tuple[torch.Tensor, ...], x_b: torch.Tensor,
                        dist_b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean per-dimension log-likelihood of x_b under a's generalized Gaussian (ỹ, α, β) and of x_a under
    b's, averaged over both directions (without the constant -log 2); rows pair up, or broadcast."""
    forward = generalized_gaussian_nll(x_b, *dist_a).mean(dim=-1)
    backward = generalized_gaussian_nll(x_a, *dist_b).mean(dim=-1)
    return -0.5 * (forward + backward)
