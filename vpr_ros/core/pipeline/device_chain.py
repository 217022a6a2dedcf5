"""The whole query of a map on one device, read back once.

From the uploaded uint8 image to the verified candidates nothing leaves the device: the joint XFeat
graph gives the global descriptor and the query's keypoints in one pass, an exact matrix-product
search gives the top-k ids as a device tensor, the candidates' stored features are gathered by those
ids, matched and verified by batched RANSAC (matching/device_rerank.py). One read-back at the end
brings the descriptor, the ranking, the matches and the fitted models to the host, where the decisions
are taken by the same rules as the host pipeline.

On CUDA (`graphs`) the whole chain is one CUDA graph per input shape, captured on first use: one
launch per frame instead of one per layer and stage. Elsewhere it runs eagerly (the CPU tests run it
that way). What the chain needs: a torch backend with the joint graph (the map's XFeat features at
the descriptor's input size), an exact (Flat) index, and an XFeat matcher; `why_not` says what is
missing. Re-ranking always matches all `rerank_top_k` candidates: in one batch, verifying the first
alone would save nothing.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import batch_to_uint8
from vpr_ros.core.matching.device_rerank import DeviceReranker
from vpr_ros.core.matching.reranker import Reranker, RerankResult
from vpr_ros.core.runtime.devices import GraphedCall, HostReader


@dataclass
class DeviceAnswer:
    """One frame's answer, on the host."""

    descriptor: np.ndarray  # 1 x D
    ids: np.ndarray  # k map keys, global order
    similarities: np.ndarray  # k cosines
    rerank: RerankResult  # the first rerank_top_k candidates, re-ranked
    timings_ms: dict[str, float] = field(default_factory=dict)


def why_not(vpr_map, backend, reranker: Reranker | None) -> str:
    """Why the map, descriptor backend and re-ranker cannot run as one device chain ("" when they can)."""
    if reranker is None:
        return "re-ranking is off (the device chain ends in verification)"
    if reranker.matcher.features != "xfeat":
        return f"matcher {reranker.matcher.name} does not use XFeat features"
    if getattr(backend, "joint", None) is None:
        return (f"the descriptor backend ({getattr(backend, 'label', 'none')}) does not run the joint XFeat graph "
                "(a torch backend, and a map whose XFeat features were extracted at the descriptor's input size)")
    if vpr_map.index.factory != "Flat":
        return f"the map's {vpr_map.index.factory!r} index is not exact (Flat)"
    return ""


def device_chain_for(config: LocalizerConfig, vpr_map, backend, reranker: Reranker | None) -> "DeviceQuery | None":
    """The map's device chain when `device_query` asks for it: on (refused with the reason when the map or
    settings do not allow it); auto and off keep the stage pipeline. auto stays off until the chain has been
    measured on a GPU (its CUDA tests have only ever skipped; docs/gpu.md): a default is a path that ran."""
    switch = config.device_query
    if switch != "on":
        if switch == "auto" and config.device.startswith("cuda"):
            LOGGER.info("device_query auto: the query runs stage by stage (the measured GPU path); the whole-"
                        "query device chain is available with device_query:=on but has not been measured on a "
                        "GPU yet (docs/gpu.md)")
        return None
    reason = ("slam maps grow every keyframe" if config.mode == "slam" else
              "sequence matching needs every map frame's similarity" if config.sequence_length else
              why_not(vpr_map, backend, reranker))
    if reason:
        raise ValueError(f"device_query is on but the query cannot stay on the device: {reason}")
    return DeviceQuery(vpr_map, backend, reranker, config.top_k, config.rerank_top_k)


class DeviceQuery:
    """A map's query chain (descriptor, search, re-ranking) as one function of device tensors."""

    def __init__(self, vpr_map, backend, reranker: Reranker, top_k: int, rerank_top_k: int = 0, graphs: bool = True,
                 resident: bool | None = None):
        reason = why_not(vpr_map, backend, reranker)
        if reason:
            raise ValueError(f"the query cannot stay on the device: {reason}")
        self.backend, self.vpr_map = backend, vpr_map
        self.device = torch.device(self.backend.device)
        self.search = vpr_map.index.torch_search(str(self.device))
        self.top_k = max(1, min(int(top_k), len(vpr_map)))
        self.rerank_k = min(rerank_top_k or self.top_k, self.top_k)
        self.reranker = DeviceReranker(reranker, vpr_map.local, self.backend.max_keypoints, resident)
        self.graphed = graphs and self.device.type == "cuda"
        self._calls = {False: GraphedCall(self.chain), True: GraphedCall(self.chain)} if self.graphed else None
        self._read = HostReader()
        self._input_size = torch.tensor(self.backend.input_size, dtype=torch.float32, device=self.device)

    def chain(self, images: torch.Tensor, image_size: torch.Tensor, camera_K: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        """1 x 3 x H x W uint8 at the descriptor's input size, the image's own (W, H) and optionally its 3 x 3
        intrinsics, all on the device -> device tensors: descriptor, ids, similarities and the re-ranker's
        launch() output. No host synchronisation and no data-dependent shapes (it can be captured)."""
        descriptor, keypoints, local, scores = self.backend.forward(images)
        sims, ids = self.search.search_tensors(descriptor, self.top_k)
        query = self.reranker.query_slots(keypoints[0], local[0], scores[0], image_size, self._input_size)
        out = self.reranker.launch(query, ids[0, :self.rerank_k], image_size, camera_K, own_generator=not self.graphed)
        return {"descriptor": descriptor, "ids": ids[0], "similarities": sims[0], **out}

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, camera_K: np.ndarray | None = None) -> DeviceAnswer:
        """One image (any format images.py accepts) -> its answer; raises images.ImageError on an unusable
        image and ValueError on a non-finite descriptor, as the host pipeline does."""
        t0 = time.perf_counter()
        batch = batch_to_uint8([image], self.backend.input_size)
        size = torch.tensor([image.shape[1], image.shape[0]], dtype=torch.float32)
        inputs = [self.backend.upload(batch), size.to(self.device, non_blocking=True)]
        if camera_K is not None:
            inputs.append(torch.as_tensor(np.asarray(camera_K, np.float32)).to(self.device, non_blocking=True))
        t1 = time.perf_counter()
        out = self._calls[camera_K is not None](*inputs) if self.graphed else self.chain(*inputs)
        host = self._read(out)  # the frame's one synchronisation
        t2 = time.perf_counter()
        if not np.isfinite(host["descriptor"]).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        ids, sims = host.pop("ids").astype(np.int64), host.pop("similarities")
        descriptor = host.pop("descriptor")
        rerank = self.reranker.finish(host, ids[:self.rerank_k], sims[:self.rerank_k], camera_K)
        t3 = time.perf_counter()
        rerank.timings_ms = {"device_query": (t2 - t1) * 1e3, "decide": (t3 - t2) * 1e3}
        return DeviceAnswer(descriptor, ids, sims, rerank, {"preprocess": (t1 - t0) * 1e3, **rerank.timings_ms})
