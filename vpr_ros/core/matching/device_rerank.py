"""Re-ranking that stays on the device: the candidates' stored features gathered by device-side ids,
matched (LighterGlue's padded dense pass, or mutual nearest neighbours) and verified by batched RANSAC
for all candidates at once, with static shapes and nothing read back; `finish` turns the read-back
result into the Reranker's RerankResult, ordered and scored by the same rules.

XFeat features only (`xfeat-lighterglue`, `xfeat-mnn`): the query's come from the joint descriptor
graph (descriptors/joint.py) as fixed slots, a slot whose score is not positive being empty.

The map's local features live on the device when they fit (a 512-keypoint XFeat frame is 70 KB: 100k
frames are 7 GB), else they stay in host memory and the K candidates' rows are gathered there, which
reads the candidate ids back first (one more synchronisation per frame; said once in the log).
"""

import numpy as np
import torch
from torch.nn import functional as F

from vpr_ros.core import LOGGER
from vpr_ros.core.matching.local_features import LocalFeatureTable
from vpr_ros.core.matching.matchers import GraphedLightGlue, mutual_nearest
from vpr_ros.core.matching.ransac import BatchedVerifier
from vpr_ros.core.matching.reranker import RankedCandidate, Reranker, RerankResult

PAD = GraphedLightGlue.PAD  # keypoint slots are padded to a multiple of this
RESIDENT_SHARE = 0.5  # the map's local features go on the GPU when they take at most this share of its free memory


class DeviceFeatureTable:
    """A map's LocalFeatureTable for gathering candidates by device ids (rows padded to `length` slots)."""

    def __init__(self, table: LocalFeatureTable, device: torch.device, length: int, resident: bool | None = None):
        self.table, self.device, self.length = table, torch.device(device), int(length)
        size = table.keypoints.nbytes + table.descriptors.nbytes
        if resident is None:
            resident = self.device.type == "cuda" and size <= RESIDENT_SHARE * torch.cuda.mem_get_info(self.device)[0]
            if not resident and self.device.type == "cuda":
                LOGGER.warning("the map's local features (%.1f GB) do not fit the GPU: candidates are gathered in host "
                               "memory, one more read-back per frame", size / 1e9)
        self.resident = bool(resident)
        if self.resident:
            self._rows = {name: torch.as_tensor(np.ascontiguousarray(array)).to(self.device)
                          for name, array in self._columns(np.arange(len(table))).items()}

    def _columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        t = self.table
        return {"keypoints": np.asarray(t.keypoints[rows], np.float32), "descriptors": np.asarray(t.descriptors[rows]),
                "counts": np.asarray(t.counts[rows], np.int64), "image_size": np.asarray(t.image_size[rows], np.float32)}

    def gather(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """K device ids -> keypoints K x L x 2 (pixels), descriptors K x L x D (float32), valid K x L,
        image_size K x 2 (W, H)."""
        if self.resident:
            rows = {name: value.index_select(0, ids.clamp_min(0)) for name, value in self._rows.items()}
        else:  # the ids come back to the host (a synchronisation) and the rows go up
            host = self._columns(ids.clamp_min(0).cpu().numpy())
            rows = {name: torch.as_tensor(value).to(self.device, non_blocking=True) for name, value in host.items()}
        slots = torch.arange(self.length, device=ids.device)
        pad = self.length - rows["keypoints"].shape[1]
        return {"keypoints": F.pad(rows["keypoints"], (0, 0, 0, pad)),
                "descriptors": F.pad(rows["descriptors"].float(), (0, 0, 0, pad)),
                "valid": slots[None] < rows["counts"][:, None], "image_size": rows["image_size"]}


class DeviceReranker:
    """A Reranker's matcher and verification run on the device against a map's local features."""

    def __init__(self, reranker: Reranker, table: LocalFeatureTable, max_keypoints: int, resident: bool | None = None):
        matcher = reranker.matcher
        if matcher.features != "xfeat":
            raise ValueError(f"re-ranking on the device needs XFeat features; {matcher.name} uses {matcher.features}")
        self.reranker, self.device = reranker, matcher.device
        verifier = reranker.verifier
        if not isinstance(verifier, BatchedVerifier):  # the same rules and settings, fitted in one batch
            verifier = BatchedVerifier(verifier.model, verifier.threshold_px, verifier.confidence, verifier.max_iters,
                                       verifier.min_inliers, verifier.min_inlier_ratio, verifier.homography_ratio,
                                       verifier.max_log_nfa, verifier.min_keypoint_share, verifier.min_inlier_coverage,
                                       device=str(self.device))
        self.verifier = verifier
        self.length = -(-max(max_keypoints, table.keypoints.shape[1]) // PAD) * PAD
        self.table = DeviceFeatureTable(table, self.device, self.length, resident)
        self.lightglue = None
        if matcher.net is not None:
            self.lightglue = GraphedLightGlue(matcher.net, matcher.precision == "fp16", matcher.min_confidence)

    def query_slots(self, keypoints: torch.Tensor, descriptors: torch.Tensor, scores: torch.Tensor,
                    image_size: torch.Tensor, input_size: torch.Tensor) -> dict[str, torch.Tensor]:
        """The joint graph's N slots for one image (keypoints at `input_size`, a (W, H) tensor) -> keypoints
        L x 2 in the image's pixels, unit descriptors L x D, valid L, as local_features.features_from_joint
        computes them."""
        kpts = keypoints.float() * (image_size.to(torch.float32) / input_size)
        desc = F.normalize(descriptors.float(), dim=-1)
        valid = (scores > 0) & torch.isfinite(kpts).all(-1) & torch.isfinite(desc).all(-1)
        pad = self.length - len(kpts)
        return {"keypoints": F.pad(kpts.nan_to_num(0.0, 0.0, 0.0), (0, 0, 0, pad)),
                "descriptors": F.pad(desc.nan_to_num(0.0, 0.0, 0.0), (0, 0, 0, pad)),
                "valid": F.pad(valid, (0, pad)), "scores": F.pad(scores.float(), (0, pad))}

    def launch(self, query: dict[str, torch.Tensor], ids: torch.Tensor, image_size: torch.Tensor,
               camera_K: torch.Tensor | None = None, own_generator: bool = True) -> dict[str, torch.Tensor]:
        """Match the query's slots against the K candidates `ids` and fit their models: device tensors only
        (match_index K x L, -1 for none; match_score K x L; BatchedVerifier.fit's output)."""
        cand = self.table.gather(ids)
        index, score = self._match(query, cand, image_size)
        valid = index >= 0
        pts1 = cand["keypoints"].gather(1, index.clamp_min(0)[..., None].expand(-1, -1, 2))
        pts0 = query["keypoints"].expand(len(ids), -1, -1)
        fitted = self.verifier.fit(pts0, pts1, valid, score, image_size, cand["image_size"], camera_K, camera_K,
                                   own_generator)
        keypoints = torch.stack([query["valid"].sum().expand(len(ids)), cand["valid"].sum(1)], 1)
        return {"match_index": index, "match_score": score, "pixels0": pts0, "pixels1": pts1, "keypoints": keypoints,
                **fitted}

    def _match(self, query, cand, image_size) -> tuple[torch.Tensor, torch.Tensor]:
        matcher = self.reranker.matcher
        if self.lightglue is None:
            return mutual_nearest(query["descriptors"], query["valid"], cand["descriptors"], cand["valid"],
                                  matcher.min_cosine)

        def normalised(kpts, size):  # as LightGlue normalises: (k - size / 2) / (max(size) / 2)
            return (kpts - size[..., None, :] / 2) / (size.amax(-1)[..., None, None] / 2)

        size0 = image_size.to(torch.float32)
        out = self.lightglue.dense(normalised(query["keypoints"], size0)[None], query["descriptors"][None],
                                   query["valid"][None], normalised(cand["keypoints"], cand["image_size"]),
                                   cand["descriptors"], cand["valid"])
        return out[0].long(), out[1]

    def finish(self, host: dict[str, np.ndarray], ids: np.ndarray, similarities: np.ndarray,
               camera_K: np.ndarray | None = None) -> RerankResult:
        """`launch`'s output read back (numpy) and the candidates' keys and global similarities -> RerankResult."""
        fitted = {key: torch.from_numpy(value) for key, value in host.items()}
        verifications = self.verifier.decide(fitted, camera_K, camera_K)
        for i, v in enumerate(verifications):  # the look-alike rules, on the matched pixels
            valid = host["valid"][i]
            self.verifier.judge_structure(v, host["pixels0"][i][valid], host["pixels1"][i][valid],
                                          tuple(host["sizes"][i][:2]), tuple(host["sizes"][i][2:]),
                                          tuple(int(c) for c in host["keypoints"][i]))
        weight = self.reranker.similarity_weight
        candidates = []
        for rank, (key, sim, verification) in enumerate(zip(ids, similarities, verifications)):
            cand = RankedCandidate(int(key), rank, float(sim), weight * float(sim),
                                   int((host["match_index"][rank] >= 0).sum()), verification)
            if verification.verified:
                cand.score = float(np.log1p(verification.inlier_count) + weight * cand.global_similarity)
            candidates.append(cand)
        return RerankResult(Reranker.order(candidates), False, len(candidates))
