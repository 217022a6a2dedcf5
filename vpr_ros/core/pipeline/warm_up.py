"""Warm a Localizer up before its first frame: the descriptor, the search and the local features each run
once on a grey frame of the map camera's size (else 640 x 480), so that the first real frame does not pay for lazy
initialisation (model loading, kernel selection, memory pools). The node does it in configure. Nothing of
the localizer's state changes: no frame is counted, no window or online map moves."""

import time

import numpy as np

from vpr_ros.core.retrieval.recognizer import PlaceRecognizer

WARM_UP_SIZE = (640, 480)  # the frame's size when the map does not record its camera's


def warm_up(localizer) -> float:
    """Milliseconds the warm-up took (0 without a map: slam before its vocabulary)."""
    with localizer.lock:
        vpr_map = localizer.vpr_map
        if vpr_map is None:
            return 0.0
        start = time.perf_counter()
        width, height = vpr_map.camera.size if vpr_map.camera is not None else WARM_UP_SIZE
        image = np.full((height, width, 3), 127, np.uint8)
        if localizer.device_query is not None:  # retrieval and re-ranking in one device chain
            localizer.device_query(image, None)
        else:
            answer = PlaceRecognizer(localizer.backend, vpr_map.index).query([image], k=1)
            if localizer.reranker is not None and (answer.encoded is None or not answer.encoded.has_local):
                localizer.reranker.extractor_for(vpr_map.local_conf).extract([image])
        return (time.perf_counter() - start) * 1e3
