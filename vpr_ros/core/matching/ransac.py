"""Batched RANSAC in torch: the two-view models of K candidate pairs fitted at once, on any device.

Every pair is padded to M matches with a validity mask, and the whole fit has static shapes and no
data-dependent Python control flow, so on CUDA it can be captured in a CUDA graph together with the
matcher that produced the matches:

1. Hypotheses: `hypotheses` minimal samples per pair, drawn in proportion to the match scores, all
   solved in one batch with Hartley normalisation: the 8-point fundamental matrix (uncalibrated), the
   8-point essential matrix on normalised image coordinates (calibrated), or the 4-point homography.
2. Preemptive scoring (Nister): every hypothesis on the same `preemptive_matches` random matches, the
   best `preemptive_keep` projected onto their manifold (rank 2; two equal singular values) and scored
   on every match: Sampson error (epipolar models) or forward transfer error (homography), truncated at
   the threshold (MSAC).
3. Local optimisation of the best `lo_candidates`: iteratively reweighted least-squares refits on all
   matches (bisquare weights inside `lo_windows` thresholds, widest first), each kept only where it
   lowers the MSAC loss; the best per pair wins.
4. Inliers: error below the threshold.

Every linear-algebra step is one that cannot read back from the device: the 8 x 8 solves use
`solve_ex` (no error check), and the manifold projections are closed form (the smallest eigenvector of a
3 x 3 from its characteristic cubic, the 2 x 2 matrix square root identity), not SVD or eigh.

Thresholds are in the coordinates given (pixels, or normalised coordinates for the essential matrix),
one per pair. The 8-point essential matrix is a weaker minimal solver than the 5-point one that
OpenCV uses; local optimisation on all inliers closes most of the gap (docs/benchmarks.md).
"""

import math

import cv2
import numpy as np
import torch

from vpr_ros.core.matching.geometry import (MIN_MATCHES, REFERENCE_WIDTH, GeometricVerifier, Verification,
                                            _nearest_rotation, chance_rates)

# what one call does; every entry has a fixed effect on the shapes, none on control flow
DEFAULT_CONF = {
    "hypotheses": 2048,  # minimal samples per pair and model
    "preemptive_matches": 64,  # every hypothesis is first scored on this many random matches of its pair ...
    "preemptive_keep": 64,  # ... and the best this-many on all matches
    "lo_candidates": 8,  # the best this-many hypotheses per pair are refined
    "lo_windows": (4.0, 2.0, 2.0, 1.5),  # one reweighted refit per entry, on matches within that many thresholds
    "solve_dtype": torch.float64,  # the 9x9 eigen-problems (float32 loses the null vector of noisy samples)
}
SAMPLE_SIZE = {"fundamental": 8, "essential": 8, "homography": 4}
MODELS = tuple(SAMPLE_SIZE)


def _centre_and_scale(points: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B x M x 2 -> (centred points, B x 2 centroid, B scale): Hartley's normalisation (mean distance
    sqrt(2) after scaling) computed over the valid matches."""
    weight = valid.to(points.dtype)
    count = weight.sum(1).clamp_min(1.0)
    centroid = (points * weight[..., None]).sum(1) / count[:, None]
    centred = (points - centroid[:, None]) * weight[..., None]
    mean_distance = centred.norm(dim=-1).sum(1) / count
    return centred, centroid, math.sqrt(2.0) / mean_distance.clamp_min(1e-9)


def _rows(x0: torch.Tensor, x1: torch.Tensor, model: str) -> torch.Tensor:
    """Rows of the linear system of each correspondence (... x 2 points): ... x 9 for x1' F x0 = 0, or
    ... x 2 x 9 for x1 ~ H x0."""
    x, y = x0.unbind(-1)
    u, v = x1.unbind(-1)
    one = torch.ones_like(x)
    if model == "homography":
        zero = torch.zeros_like(x)
        first = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], -1)
        second = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], -1)
        return torch.stack([first, second], -2)
    return torch.stack([u * x, u * y, u, v * x, v * y, v, x, y, one], -1)


def _minimal_null_vector(rows: torch.Tensor) -> torch.Tensor:
    """... x 8 x 9 systems -> ... x 3 x 3 models: with the last entry fixed to 1, an 8 x 8 solve (an LU
    per sample, several times cheaper than an eigen-decomposition, and without the error check that would
    read back from the device; a singular sample gives a model that loses in scoring)."""
    solution = torch.linalg.solve_ex(rows[..., :8], -rows[..., 8:])[0][..., 0]
    vector = torch.cat([solution, torch.ones_like(solution[..., :1])], -1)
    return vector.nan_to_num(0.0, 0.0, 0.0).reshape(*rows.shape[:-2], 3, 3)


def _weighted_null_vector(normal: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """... x 9 x 9 normal matrices (A'WA) -> ... x 3 x 3: the unit vector minimising |A f|, by inverse
    iteration (`steps` 9 x 9 solves) from the solution with its last entry fixed to 1, which alone is
    biased where that entry is small."""
    vector = _minimal_null_vector(normal[..., :8, :]).flatten(-2)
    ridge = 1e-12 * normal.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300)
    shifted = normal + ridge[..., None, None] * torch.eye(9, dtype=normal.dtype, device=normal.device)
    for _ in range(steps):
        vector = vector / vector.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        vector = torch.linalg.solve_ex(shifted, vector[..., None])[0][..., 0].nan_to_num(0.0, 0.0, 0.0)
    vector = vector / vector.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return vector.reshape(*normal.shape[:-2], 3, 3)


def _cross_rows(matrix: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 of rank 2 -> the unit vector of its null space: the longest cross product of two rows."""
    r0, r1, r2 = matrix.unbind(-2)
    candidates = torch.stack([torch.linalg.cross(r0, r1), torch.linalg.cross(r0, r2), torch.linalg.cross(r1, r2)], -2)
    norms = candidates.norm(dim=-1)
    best = candidates.gather(-2, norms.argmax(-1)[..., None, None].expand(*norms.shape[:-1], 1, 3))[..., 0, :]
    return best / norms.amax(-1, keepdim=True).clamp_min(1e-300)


def _det3(m: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 -> determinants, written out (no LU)."""
    return (m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
            - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
            + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]))


def _smallest_eigenvector(sym: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 symmetric positive semi-definite -> the unit eigenvector of its smallest eigenvalue, in
    closed form (the trigonometric solution of the characteristic cubic), elementwise: no solver call."""
    q = sym.diagonal(dim1=-2, dim2=-1).sum(-1) / 3
    off = sym[..., 0, 1] ** 2 + sym[..., 0, 2] ** 2 + sym[..., 1, 2] ** 2
    diag = sym.diagonal(dim1=-2, dim2=-1) - q[..., None]
    p = torch.sqrt(((diag ** 2).sum(-1) + 2 * off) / 6).clamp_min(1e-300)
    eye = torch.eye(3, dtype=sym.dtype, device=sym.device)
    half_det = _det3((sym - q[..., None, None] * eye) / p[..., None, None]) / 2
    phi = torch.acos(half_det.clamp(-1, 1)) / 3
    smallest = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    return _cross_rows(sym - smallest[..., None, None] * eye)


def _project(models: torch.Tensor, model: str) -> torch.Tensor:
    """Onto the model's manifold, in closed form: rank 2 for the fundamental matrix (remove the direction
    of its smallest singular value, v3), and for the essential matrix also two equal singular values
    (G (G'G)^(-1/2) on the rank-2 part G, from the 2 x 2 matrix square-root identity)."""
    if model == "homography":
        return models
    v3 = _smallest_eigenvector(models.transpose(-1, -2) @ models)
    eye = torch.eye(3, dtype=models.dtype, device=models.device)
    keep = eye - v3[..., :, None] * v3[..., None, :]
    rank2 = models @ keep
    if model == "fundamental":
        return rank2
    gram = rank2.transpose(-1, -2) @ rank2  # V diag(a, b, 0) V'
    g = gram
    product = (g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] ** 2 + g[..., 0, 0] * g[..., 2, 2] - g[..., 0, 2] ** 2
               + g[..., 1, 1] * g[..., 2, 2] - g[..., 1, 2] ** 2)  # a b: the sum of the principal 2 x 2 minors
    root_ab = product.clamp_min(0).sqrt()
    trace_root = torch.sqrt((gram.diagonal(dim1=-2, dim2=-1).sum(-1) + 2 * root_ab).clamp_min(1e-300))
    root = (gram + root_ab[..., None, None] * keep) / trace_root[..., None, None]  # V diag(sqrt a, sqrt b, 0) V'
    inverse_root = (trace_root[..., None, None] * keep - root) / root_ab.clamp_min(1e-300)[..., None, None]
    return rank2 @ inverse_root * (trace_root / 2)[..., None, None]  # singular values (s1 + s2) / 2, twice


def _errors(models: torch.Tensor, q0: torch.Tensor, q1: torch.Tensor, model: str) -> torch.Tensor:
    """Squared Sampson (epipolar) or forward transfer (homography) errors: B x H x 3 x 3 models,
    B x M x 2 points -> B x H x M."""
    p0 = torch.cat([q0, torch.ones_like(q0[..., :1])], -1)
    mapped = torch.einsum("bhij,bmj->bhmi", models, p0)  # F x0 or H x0
    if model == "homography":
        w = mapped[..., 2]
        safe = torch.where(w.abs() > 1e-12, w, torch.full_like(w, 1e-12))
        err = ((mapped[..., :2] / safe[..., None] - q1[:, None]) ** 2).sum(-1)
        return torch.where(w.abs() > 1e-12, err, torch.full_like(err, float("inf")))
    p1 = torch.cat([q1, torch.ones_like(q1[..., :1])], -1)
    back = torch.einsum("bhji,bmj->bhmi", models, p1)  # F' x1
    residual = (p1[:, None] * mapped).sum(-1)
    gradient = mapped[..., 0] ** 2 + mapped[..., 1] ** 2 + back[..., 0] ** 2 + back[..., 1] ** 2
    return residual ** 2 / gradient.clamp_min(1e-30)


def _msac(errors: torch.Tensor, valid: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """B x H x M errors -> B x H truncated losses (an invalid match costs what an outlier costs)."""
    truncated = torch.minimum(errors.nan_to_num(float("inf")), limit[:, None, None])
    return torch.where(valid[:, None], truncated, limit[:, None, None]).sum(-1)


def ransac(pts0: torch.Tensor, pts1: torch.Tensor, valid: torch.Tensor, threshold: torch.Tensor,
           model: str = "fundamental", weights: torch.Tensor | None = None,
           generator: torch.Generator | None = None, conf: dict | None = None) -> dict[str, torch.Tensor]:
    """Fit one model per pair.

    pts0, pts1: B x M x 2 matched points (query, candidate); valid: B x M bool; threshold: B (same
    units as the points); weights: B x M sampling weights (match scores; None: uniform).
    Returns {"model": B x 3 x 3 (x1' F x0 = 0, or x1 ~ H x0, in the given coordinates),
    "inliers": B x M bool, "count": B int64, "loss": B}.
    """
    if model not in SAMPLE_SIZE:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    conf = {**DEFAULT_CONF, **(conf or {})}
    batch, length = valid.shape
    if pts0.shape != (batch, length, 2) or pts1.shape != (batch, length, 2):
        raise ValueError(f"points must be {batch} x {length} x 2 like the mask, got {tuple(pts0.shape)} and "
                         f"{tuple(pts1.shape)}")
    dtype, solve = pts0.dtype, conf["solve_dtype"]
    if model == "essential":  # normalised camera coordinates already; centring would break E's structure
        zero, one = pts0.new_zeros(batch, 2), pts0.new_ones(batch)
        (q0, c0, s0), (q1, c1, s1) = (pts0, zero, one), (pts1, zero, one)
    else:
        q0, c0, s0 = _centre_and_scale(pts0, valid)
        q1, c1, s1 = _centre_and_scale(pts1, valid)
    n0, n1 = (q0 * s0[:, None, None]).to(solve), (q1 * s1[:, None, None]).to(solve)
    rows = _rows(n0, n1, model)  # B x M x 9, or B x M x 2 x 9 for the homography
    limit = threshold.to(dtype) ** 2

    # 1. minimal samples, drawn with replacement in proportion to the match scores (a sample that repeats a
    #    match is singular and loses in scoring; drawing all at once costs B x H x s, not B x H x M)
    hypotheses, size = int(conf["hypotheses"]), SAMPLE_SIZE[model]
    w = torch.ones_like(pts0[..., 0]) if weights is None else weights.to(dtype).nan_to_num(0.0).clamp_min(1e-6)
    w = torch.where(valid, w, torch.zeros_like(w)) + (~valid.any(1, keepdim=True)).to(dtype)  # no match: any
    cdf = w.cumsum(1)
    draws = torch.rand(batch, hypotheses * size, generator=generator, device=pts0.device, dtype=dtype) * cdf[:, -1:]
    sample = torch.searchsorted(cdf, draws).clamp_max(length - 1).view(batch, hypotheses, size)
    picked = rows[torch.arange(batch, device=rows.device)[:, None, None], sample]  # B x H x s (x 2) x 9
    picked = picked.flatten(2, -2) if model == "homography" else picked
    models = _minimal_null_vector(picked)  # projected onto the manifold once preemption has kept a few

    # 2. back to centred coordinates (S1' F S0 or S1^-1 H S0); preemptive scoring (Nister): every hypothesis
    #    on the same random subset of matches, then the best `preemptive_keep` on every match
    scale0 = torch.diag_embed(torch.stack([s0, s0, torch.ones_like(s0)], -1)).to(solve)
    scale1 = torch.diag_embed(torch.stack([s1, s1, torch.ones_like(s1)], -1)).to(solve)
    inverse1 = torch.diag_embed(torch.stack([1 / s1, 1 / s1, torch.ones_like(s1)], -1)).to(solve)
    left = inverse1 if model == "homography" else scale1
    def to_centred(normalised: torch.Tensor) -> torch.Tensor:  # B x T x 3 x 3, unit Frobenius norm
        centred = (left[:, None] @ normalised @ scale0[:, None]).to(dtype)
        return centred / centred.flatten(-2).norm(dim=-1).clamp_min(1e-30)[..., None, None]

    keep = min(int(conf["preemptive_keep"]), hypotheses)
    if keep < hypotheses:
        # with replacement, by inverse CDF: the draws do not depend on how far the pairs are padded
        counts = valid.to(dtype).cumsum(1)
        draws = torch.rand(batch, int(conf["preemptive_matches"]), generator=generator, device=pts0.device,
                           dtype=dtype) * counts[:, -1:]
        subset = torch.searchsorted(counts, draws).clamp_max(length - 1)  # B x S
        rows_b = torch.arange(batch, device=subset.device)[:, None]
        quick = _msac(_errors(to_centred(models), q0[rows_b, subset], q1[rows_b, subset], model),
                      valid[rows_b, subset], limit)
        models = models[rows_b, quick.topk(keep, dim=1, largest=False).indices]
    centred = to_centred(_project(models, model))  # projected in normalised coordinates, in solve_dtype
    errors = _errors(centred, q0, q1, model)
    loss = _msac(errors, valid, limit)
    # 3. local optimisation of the `lo_candidates` best hypotheses: reweighted refits on all matches, each
    #    kept where it lowers the MSAC loss; the wider first window pulls in inliers a noisy sample missed
    top = loss.topk(min(int(conf["lo_candidates"]), keep), dim=1, largest=False).indices  # B x T
    pick = torch.arange(batch, device=top.device)[:, None]
    model_c, err, best_loss = centred[pick, top], errors[pick, top], loss[pick, top]  # B x T ...
    for widen in conf["lo_windows"]:
        scaled = err / (widen ** 2 * limit[:, None, None])
        weight = torch.where(valid[:, None] & (scaled < 1), (1 - scaled).clamp_min(0) ** 2, torch.zeros_like(scaled))
        if model == "homography":
            normal = torch.einsum("btm,bmri,bmrj->btij", weight.to(solve), rows, rows)
        else:
            normal = torch.einsum("btm,bmi,bmj->btij", weight.to(solve), rows, rows)
        refit = to_centred(_project(_weighted_null_vector(normal), model))
        refit_err = _errors(refit, q0, q1, model)
        refit_loss = _msac(refit_err, valid, limit)
        better = refit_loss < best_loss
        model_c = torch.where(better[..., None, None], refit, model_c)
        err = torch.where(better[..., None], refit_err, err)
        best_loss = torch.minimum(refit_loss, best_loss)
    best = best_loss.argmin(1)
    pick = torch.arange(batch, device=best.device)
    model_c, err, best_loss = model_c[pick, best], err[pick, best], best_loss[pick, best]

    inliers = valid & (err < limit[:, None])
    # 4. the model in the caller's coordinates: q = p - c, so x1' M x0 with the centring undone
    shift0, shift1 = _translation(-c0), _translation(-c1)
    if model == "homography":
        full = _translation(c1) @ model_c @ shift0
    else:
        full = shift1.transpose(1, 2) @ model_c @ shift0
    return {"model": full, "inliers": inliers, "count": inliers.sum(1), "loss": best_loss}


def _translation(offset: torch.Tensor) -> torch.Tensor:
    """B x 2 -> B x 3 x 3 translations by `offset`."""
    eye = torch.eye(3, dtype=offset.dtype, device=offset.device).expand(len(offset), 3, 3).clone()
    eye[:, :2, 2] = offset
    return eye


def spread(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """B x M x 2 -> B: the smaller standard deviation of each pair's valid points along their principal
    axes (the batched form of geometry._spread)."""
    centred, _, _ = _centre_and_scale(points, valid)
    count = valid.sum(1).clamp_min(1).to(points.dtype)
    cxx = (centred[..., 0] ** 2).sum(1) / count
    cyy = (centred[..., 1] ** 2).sum(1) / count
    cxy = (centred[..., 0] * centred[..., 1]).sum(1) / count
    smallest = 0.5 * (cxx + cyy) - torch.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy ** 2)
    return smallest.clamp_min(0).sqrt()


class BatchedVerifier(GeometricVerifier):
    """GeometricVerifier's decisions with the models fitted by batched RANSAC (above) for all candidate
    pairs in one call, on `device`: `fit` stays on the device (nothing is read back), `decide` turns its
    output into Verifications after one copy to the host. The pre-checks (too few matches, non-finite or
    collinear points), the homography test and the verified rule are GeometricVerifier's."""

    PAD = 64  # matches per pair are padded to a multiple of this, so few shapes occur

    def __init__(self, *args, device: str = "cpu", conf: dict | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        self.conf = {**DEFAULT_CONF, **(conf or {})}
        self.seed = int(seed)
        self.generator = torch.Generator(self.device)

    def verify(self, query_pts, map_pts, query_size, map_size, query_K=None, map_K=None,
               keypoints: tuple[int, int] | None = None) -> Verification:
        return self.verify_batch([(query_pts, map_pts, None)], query_size, [map_size], query_K, map_K,
                                 None if keypoints is None else [keypoints])[0]

    def verify_batch(self, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], query_size: tuple[int, int],
                     map_sizes: list[tuple[int, int]], query_K: np.ndarray | None = None,
                     map_K: np.ndarray | None = None, keypoints: list[tuple[int, int]] | None = None
                     ) -> list[Verification]:
        """pairs: (query points S x 2, map points S x 2, match scores S or None) per candidate -> one
        Verification each, all fitted in one batch, then judged by the look-alike rules (keypoints: the
        two images' keypoint counts per pair, or None)."""
        if not pairs:
            return []
        length = max(1, -(-max(len(p[0]) for p in pairs) // self.PAD) * self.PAD)
        pts0 = np.zeros((len(pairs), length, 2), np.float32)
        pts1, valid, scores = np.zeros_like(pts0), np.zeros((len(pairs), length), bool), np.ones((len(pairs), length), np.float32)
        for i, (p0, p1, s) in enumerate(pairs):
            p0, p1 = np.asarray(p0, np.float32).reshape(-1, 2), np.asarray(p1, np.float32).reshape(-1, 2)
            if len(p0) != len(p1):
                raise ValueError(f"{len(p0)} query points for {len(p1)} map points")
            pts0[i, :len(p0)], pts1[i, :len(p1)], valid[i, :len(p0)] = p0, p1, True
            if s is not None:
                scores[i, :len(p0)] = s
        tensors = [torch.from_numpy(a).to(self.device) for a in (pts0, pts1, valid, scores)]
        fitted = self.fit(*tensors, query_size, map_sizes, query_K, map_K)
        decided = self.decide({k: v.cpu() for k, v in fitted.items()}, query_K, map_K)
        return [self.judge_structure(v, p0, p1, query_size, size, None if keypoints is None else keypoints[i])
                for i, (v, (p0, p1, _), size) in enumerate(zip(decided, pairs, map_sizes))]

    def fit(self, pts0: torch.Tensor, pts1: torch.Tensor, valid: torch.Tensor, scores: torch.Tensor,
            query_size, map_sizes, query_K=None, map_K=None, own_generator: bool = True) -> dict[str, torch.Tensor]:
        """B x M padded matches (pixels), their validity and scores -> device tensors for `decide`.

        query_size: (W, H) or a 2-tensor; map_sizes: B (W, H) or a B x 2 tensor; query_K, map_K: 3 x 3
        arrays or tensors (both, or None: uncalibrated). With `own_generator` the verifier's generator is
        reseeded, so the same matches always give the same answer (however far they are padded); without
        it the default generator draws (what a CUDA graph capture needs)."""
        batch, dtype, device = len(valid), pts0.dtype, pts0.device
        scale0 = torch.as_tensor(query_size, device=device).to(dtype).reshape(2).amax() / REFERENCE_WIDTH
        scale1 = torch.as_tensor(map_sizes, device=device).to(dtype).reshape(batch, 2).amax(1) / REFERENCE_WIDTH
        threshold = self.threshold_px * 0.5 * (scale0 + scale1)
        sizes = torch.cat([torch.as_tensor(query_size, device=device).to(dtype).reshape(1, 2).expand(batch, 2),
                           torch.as_tensor(map_sizes, device=device).to(dtype).reshape(batch, 2)], 1)
        finite = torch.isfinite(pts0).all(-1) & torch.isfinite(pts1).all(-1)
        clean0, clean1 = pts0.nan_to_num(0.0, 0.0, 0.0), pts1.nan_to_num(0.0, 0.0, 0.0)
        out = {"matches": valid.sum(1), "finite": (finite | ~valid).all(1), "valid": valid,
               "sizes": sizes, "threshold_px": threshold,
               "spread": torch.minimum(spread(clean0, valid) / scale0, spread(clean1, valid) / scale1)}
        with_pose = query_K is not None and map_K is not None
        if with_pose:
            k0, k1 = (torch.as_tensor(k if torch.is_tensor(k) else np.asarray(k, np.float64), device=device).to(dtype)
                      for k in (query_K, map_K))
            clean0 = (clean0 - k0[:2, 2]) / torch.stack([k0[0, 0], k0[1, 1]])
            clean1 = (clean1 - k1[:2, 2]) / torch.stack([k1[0, 0], k1[1, 1]])
            threshold = threshold / (0.25 * (k0[0, 0] + k0[1, 1] + k1[0, 0] + k1[1, 1]))
            out["points0"], out["points1"] = clean0, clean1  # for the pose, recovered on the host
        models = ["homography"] if self.model == "homography" and not with_pose else \
            ["essential" if with_pose else "fundamental", "homography"]
        generator = self.generator.manual_seed(self.seed) if own_generator else None
        for model in models:
            fitted = ransac(clean0, clean1, valid & finite, threshold, model, scores, generator, self.conf)
            out[f"{model}_model"], out[f"{model}_inliers"] = fitted["model"], fitted["inliers"]
        return out

    def decide(self, fitted: dict[str, torch.Tensor], query_K: np.ndarray | None = None,
               map_K: np.ndarray | None = None) -> list[Verification]:
        """`fit`'s output, on the host -> one Verification per pair, by GeometricVerifier's rules."""
        with_pose = query_K is not None and map_K is not None
        model = "essential" if with_pose else self.model
        out = []
        for i in range(len(fitted["matches"])):
            n, need = int(fitted["matches"][i]), max(MIN_MATCHES[model], self.min_inliers)
            if not bool(fitted["finite"][i]):
                out.append(Verification.failed(n, "non-finite keypoint coordinates"))
            elif n < need:
                out.append(Verification.failed(n, f"{n} matches, fewer than the {need} a verified {model} model needs"))
            elif float(fitted["spread"][i]) < self.threshold_px:
                out.append(Verification.failed(n, "matched keypoints are (nearly) collinear or coincident: "
                                                  "no two-view geometry can be fitted"))
            else:
                out.append(self._decide_one(fitted, i, n, model))
        return out

    def _decide_one(self, fitted, i, n, model) -> Verification:
        valid = fitted["valid"][i].numpy()
        w0, h0, w1, h1 = (float(v) for v in fitted["sizes"][i])
        chance = chance_rates(float(fitted["threshold_px"][i]), (w0, h0), (w1, h1))
        h_mask = fitted["homography_inliers"][i].numpy()[valid]
        if model == "homography":
            return self._result("homography", h_mask, chance)
        mask = fitted[f"{model}_inliers"][i].numpy()[valid]
        share = h_mask.sum() / max(mask.sum(), 1)
        if model == "fundamental":
            if h_mask.sum() >= self.homography_ratio * mask.sum():
                return self._result("homography", h_mask, chance, "a homography explains the matches (a plane, "
                                                                  "pure rotation or no motion)", homography_share=share)
            return self._result("fundamental", mask, chance, homography_share=share)
        h = fitted["homography_model"][i].double().numpy()
        if h_mask.sum() >= self.homography_ratio * mask.sum():
            rotation, error = _nearest_rotation(h)
            if error < 0.05:
                return self._result("homography", h_mask, chance, "pure rotation or no motion: translation unknown",
                                    rotation.T, None, share)
        if not mask.any():
            return self._result("essential", mask, chance, "no essential matrix could be fitted", homography_share=share)
        n0 = fitted["points0"][i].double().numpy()[valid]
        n1 = fitted["points1"][i].double().numpy()[valid]
        e = fitted["essential_model"][i].double().numpy()
        _, r, t, _ = cv2.recoverPose(e, n0, n1, np.eye(3), mask=mask.astype(np.uint8).copy())
        translation = -(r.T @ t).ravel()
        translation /= max(np.linalg.norm(translation), 1e-12)
        return self._result("essential", mask, chance, "translation direction only (scale unknown)", r.T, translation,
                            share)


def make_verifier(name: str, device: str = "cpu", **settings) -> GeometricVerifier:
    """A verifier by config name (config.VERIFIERS): `opencv` GeometricVerifier, `torch` BatchedVerifier on
    `device`, `auto` the batched one on CUDA and OpenCV on the CPU (docs/benchmarks.md: on 2 CPU cores
    OpenCV in threads verifies 10 pairs in about 31 ms, the batched fit in about 200 ms)."""
    if name not in ("auto", "opencv", "torch"):
        raise ValueError(f"unknown verifier {name!r}; choose one of ['auto', 'opencv', 'torch']")
    if name == "torch" or (name == "auto" and str(device).startswith("cuda")):
        return BatchedVerifier(device=device, **settings)
    return GeometricVerifier(**settings)
