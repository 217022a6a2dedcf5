"""The whole query as one device chain (pipeline/device_chain.py), run here on the CPU: the same answers as
the stage-by-stage pipeline, nothing read back inside the chain, clear refusals, bad frames survived."""

import numpy as np
import pytest
import torch
from conftest import NoReadBack

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import ImageError
from vpr_ros.core.pipeline.localizer import Localizer

K = np.array([[160.0, 0, 80], [0, 160.0, 60], [0, 0, 1]])  # Corridor frames are 160 x 120


@pytest.fixture(scope="module")
def corridor_map(corridor_dir):
    from conftest import corridor40_map

    return corridor40_map(corridor_dir)


@pytest.fixture(scope="module")
def query_images(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    return [read_image(corridor_dir / "query" / f"{q:07d}.jpg") for q in range(0, 40, 3)]


def _config(**overrides) -> LocalizerConfig:
    settings = dict(backend="torch", verifier="torch", rerank="xfeat-mnn", device="cpu", temporal_window=0)
    return LocalizerConfig(**{**settings, **overrides})


def _summary(result):
    return [(p.hypothesis.key, p.match_count, p.verification.inlier_count if p.verification else -1, p.verified,
             p.verification.model if p.verification else "") for p in result.places]


@pytest.mark.parametrize("calibrated", [False, True])
def test_device_chain_answers_as_the_stage_pipeline_does(corridor_map, query_images, calibrated):
    on = Localizer(_config(device_query="on"), corridor_map)
    off = Localizer(_config(device_query="off"), corridor_map)
    assert on.device_query is not None and off.device_query is None
    camera_K = K if calibrated else None
    counts, same = [], []
    for i, image in enumerate(query_images):
        a, b = on.process(image, i * 10**9, camera_K=camera_K), off.process(image, i * 10**9, camera_K=camera_K)
        assert np.array_equal(a.global_keys, b.global_keys)
        assert np.allclose(a.descriptor, b.descriptor, atol=1e-5)
        got, want = _summary(a), _summary(b)
        assert [g[1] for g in sorted(got)] == [w[1] for w in sorted(want)], "mutual NN matches differ"
        counts += [abs(g[2] - w[2]) for g, w in zip(sorted(got), sorted(want))]
        same += [g[3] == w[3] and g[4] == w[4] for g, w in zip(sorted(got), sorted(want))]
        assert (a.loop is None) == (b.loop is None)
        assert {"device_query", "decide", "pipeline"} <= set(a.timings_ms)
    # the same fit on differently padded batches: float sums differ in the last bits, a borderline match flips
    assert np.mean(np.array(counts) == 0) >= 0.9 and max(counts) <= 5, counts
    assert np.mean(same) >= 0.95
    if calibrated:
        assert any(p.verification.rotation is not None for p in a.places if p.verified)


def test_device_chain_with_lighterglue_agrees_with_the_pruned_cpu_matcher(corridor_map, query_images):
    """On the CPU the stage pipeline runs LightGlue per pair with point pruning, the chain its padded dense
    pass (as CUDA always does): the same places, nearly the same matches."""
    on = Localizer(_config(device_query="on", rerank="xfeat-lighterglue"), corridor_map)
    off = Localizer(_config(device_query="off", rerank="xfeat-lighterglue"), corridor_map)
    for i, image in enumerate(query_images[:6]):
        a, b = on.process(image, i * 10**9), off.process(image, i * 10**9)
        assert a.places[0].hypothesis.key == b.places[0].hypothesis.key
        for g, w in zip(sorted(_summary(a)), sorted(_summary(b))):
            assert abs(g[1] - w[1]) <= max(10, 0.15 * w[1]) and g[3] == w[3], (g, w)


@pytest.mark.parametrize("rerank", ["xfeat-mnn", "xfeat-lighterglue"])
def test_chain_reads_nothing_back_and_has_static_shapes(corridor_map, query_images, rerank):
    from vpr_ros.core.inputs.images import batch_to_uint8
    from vpr_ros.core.pipeline.device_chain import DeviceQuery

    localizer = Localizer(_config(rerank=rerank), corridor_map)  # the map's backend and re-ranker
    chain = DeviceQuery(corridor_map, localizer.backend, localizer.reranker, top_k=5, resident=True)
    assert chain.reranker.table.resident
    shapes = set()
    for image in query_images[:2]:
        images = batch_to_uint8([image], localizer.backend.input_size)
        size = torch.tensor([image.shape[1], image.shape[0]], dtype=torch.float32)
        with torch.inference_mode(), NoReadBack():
            out = chain.chain(images, size, torch.as_tensor(K, dtype=torch.float32))
        shapes.add(tuple((name, tuple(t.shape)) for name, t in sorted(out.items())))
    assert len(shapes) == 1, "the chain's outputs change shape with the content"
    assert dict(next(iter(shapes)))["match_index"] == (5, chain.reranker.length)


def test_device_query_on_is_refused_with_the_reason(corridor_map):
    with pytest.raises(ValueError, match="re-ranking is off"):
        Localizer(_config(device_query="on", rerank="off"), corridor_map)
    with pytest.raises(ValueError, match="joint XFeat graph"):
        Localizer(_config(device_query="on", backend="onnxruntime"), corridor_map)
    with pytest.raises(ValueError, match="slam maps grow"):
        Localizer(_config(device_query="on", mode="slam"), corridor_map)
    assert Localizer(_config(), corridor_map).device_query is None, "auto keeps the CPU on the stage pipeline"


def test_device_chain_survives_bad_frames(corridor_map, query_images):
    localizer = Localizer(_config(device_query="on"), corridor_map)
    for bad in (np.zeros((0, 0, 3), np.uint8), np.zeros((5, 5), np.uint8), np.full((120, 160, 3), np.nan, np.float32)):
        with pytest.raises((ImageError, ValueError)):
            localizer.process(bad, 1)
    assert localizer.frames_processed == 0
    result = localizer.process(query_images[0], 2)
    assert result.places and result.places[0].verified and localizer.frames_processed == 1
