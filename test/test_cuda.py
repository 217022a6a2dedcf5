"""The CUDA paths: torch descriptor in fp32/fp16 with CUDA graphs, search on the GPU, the batched
matcher and the whole Localizer on CUDA, each against the CPU result on real images. They run where
torch sees a GPU and skip with the reason elsewhere (the refusals on a machine without one are tested
in test_export.py and test_core_retrieval.py)."""

import numpy as np
import pytest
import torch

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import list_images, read_image
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.build.map_builder import build_map
from vpr_ros.core.build.sources import load_image_file
from vpr_ros.core.matching.local_features import LocalExtractor
from vpr_ros.core.matching.matchers import Matcher
from vpr_ros.core.runtime.backends import TorchBackend
from vpr_ros.core.runtime.devices import GraphedCall, resolve_device, resolve_precision

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU on this machine")


def test_device_and_precision_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "fp16"
    for bad in ("gpu0", "cuda1", "cuda:", "cuda:x"):
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(bad)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        LocalizerConfig(precision="bf16")


@pytest.fixture(scope="module")
def corridor_map(corridor_dir):
    """A 40-frame Corridor map with XFeat local features, and 20 query images."""
    refs = list_images(corridor_dir / "ref")[:40]
    vpr_map = build_map("corridor-cuda", FrameTable.build(np.arange(40), refs), load_image_file, "default",
                        local_features="xfeat")
    queries = [read_image(p) for p in list_images(corridor_dir / "query")[:20]]
    return vpr_map, queries


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@needs_cuda
@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.999), ("fp16", 0.998)])
def test_cuda_descriptor_agrees_with_the_cpu(corridor_map, precision, min_cosine):
    vpr_map, queries = corridor_map
    tensor = batch_to_tensor(queries[:8], vpr_map.descriptor.input_size)
    reference = TorchBackend(vpr_map.descriptor, "cpu").describe(tensor)
    graphed = TorchBackend(vpr_map.descriptor, "cuda", precision, cuda_graphs=True)
    eager = TorchBackend(vpr_map.descriptor, "cuda", precision, cuda_graphs=False)
    for batch in (tensor[:1], tensor[1:4], tensor[:1]):  # batch sizes 1, 3, then 1 again (replayed)
        got = graphed.describe(batch)
        np.testing.assert_allclose(got, eager.describe(batch), rtol=0, atol=2e-3 if precision == "fp16" else 1e-5)
        assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert len(graphed._graphed) == 2  # one capture per batch size
    cosine = _cosine(graphed.describe(tensor), reference)
    assert cosine.min() >= min_cosine, cosine


@needs_cuda
@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.999), ("fp16", 0.995)])
def test_joint_graph_on_cuda_is_one_capture_and_agrees_with_the_cpu(corridor_map, precision, min_cosine):
    """The descriptor and XFeat's keypoints from one pass, captured as one CUDA graph (static shapes:
    descriptors/xfeat_sparse.py), against the same joint module on the CPU."""
    from vpr_ros.core.inputs.images import batch_to_uint8
    from vpr_ros.core.runtime.backends import agreement

    vpr_map, queries = corridor_map
    images = np.stack([np.asarray(batch_to_uint8([q], vpr_map.descriptor.input_size)[0]) for q in queries[:4]])
    graphed = TorchBackend(vpr_map.descriptor, "cuda", precision, cuda_graphs=True, max_keypoints=512)
    report = agreement(TorchBackend(vpr_map.descriptor, "cpu", max_keypoints=512), graphed, images,
                       min_cosine=min_cosine, min_shared_keypoints=0.8)
    assert report["agrees"], report
    assert len(graphed._graphed) == 1  # the whole joint pass is one capture


@needs_cuda
def test_graphed_call_replays_new_inputs():
    weight = torch.randn(64, 64, device="cuda")
    graphed = GraphedCall(lambda x: torch.relu(x @ weight).sum(dim=1))
    for _ in range(3):  # fresh inputs each time: the replay must not return the capture's values
        x = torch.randn(5, 64, device="cuda")
        torch.testing.assert_close(graphed(x).clone(), torch.relu(x @ weight).sum(dim=1))
    assert len(graphed) == 1


@needs_cuda
def test_gpu_search_matches_faiss_on_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((20000, 256)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.choice(len(data), 16)] + 0.05 * rng.standard_normal((16, 256)).astype(np.float32)
    cpu = DescriptorIndex(256)
    cpu.add(data)
    gpu = DescriptorIndex(256, device="cuda")
    gpu.add(data[:15000])
    gpu.add(data[15000:])  # grows past its first capacity
    assert gpu.device == "cuda" and gpu.search_backend in ("torch-matmul", "faiss-gpu")
    want_sims, want_ids = cpu.search(queries, 10)
    sims, ids = gpu.search(queries, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    small = DescriptorIndex(256, device="cuda")
    small.add(data[:3])
    sims, ids = small.search(data[:1], 5)  # fewer frames than k: padded as faiss pads
    assert ids[0, 0] == 0 and list(ids[0, 3:]) == [-1, -1] and np.isinf(sims[0, 3:]).all()
    gpu.write(tmp_path / "index.faiss")
    back = DescriptorIndex.read(tmp_path / "index.faiss", 256, "Flat")
    np.testing.assert_array_equal(back.search(queries, 10)[1], want_ids)
    gpu.to_device("cpu")
    assert gpu.label == "faiss Flat/cpu" and np.array_equal(gpu.search(queries, 10)[1], want_ids)


@needs_cuda
def test_quantised_index_without_faiss_gpu_is_refused_clearly():
    from vpr_ros.core.map.index import faiss_has_gpu

    if faiss_has_gpu():
        pytest.skip("this faiss has GPU support: IVF indexes do run on the GPU here")
    with pytest.raises(ValueError, match="needs faiss with GPU support"):
        DescriptorIndex(64, "IVF16,Flat", device="cuda")


@needs_cuda
def test_batched_cuda_matcher_matches_pair_by_pair(corridor_map, corridor_dir):
    vpr_map, queries = corridor_map
    extractor = LocalExtractor("xfeat", 512, device="cuda")
    query = extractor.extract([queries[5]])[0]
    candidates = [vpr_map.local[k] for k in range(10)] + [vpr_map.local[0].__class__(
        np.zeros((0, 2), np.float32), np.zeros((0, 64), np.float32), np.zeros(0, np.float32), (640, 480))]
    for precision in ("fp32", "fp16"):
        graphed = Matcher("xfeat-lighterglue", device="cuda", precision=precision)
        eager = Matcher("xfeat-lighterglue", device="cuda", precision=precision, cuda_graphs=False)
        assert graphed._graphed is not None and eager._graphed is None
        batched = graphed.match(query, candidates)
        assert len(graphed._graphed.call) == 1
        assert [len(m) for m in graphed.match(query, candidates)] == [len(m) for m in batched]  # replayed
        single = [eager.match(query, [c])[0] for c in candidates]
        assert len(batched[-1]) == 0
        for b, s in zip(batched, single):
            same = len(set(zip(b.query_idx, b.map_idx)) & set(zip(s.query_idx, s.map_idx)))
            assert same >= 0.95 * max(len(s), 1) - 1, (precision, len(b), len(s), same)
    cpu = Matcher("xfeat-lighterglue").match(LocalExtractor("xfeat", 512).extract([queries[5]])[0], candidates[:10])
    gpu = Matcher("xfeat-lighterglue", device="cuda").match(query, candidates[:10])
    counts = np.array([[len(c), len(g)] for c, g in zip(cpu, gpu)])
    assert np.corrcoef(counts.T)[0, 1] > 0.9, counts  # the same candidates are the well-matched ones


@needs_cuda
def test_localizer_on_cuda_answers_like_the_cpu(corridor_map):
    vpr_map, queries = corridor_map
    answers = {}
    for device in ("cpu", "cuda"):
        localizer = Localizer(LocalizerConfig(top_k=5, rerank="xfeat-lighterglue", device=device), vpr_map)
        results = [localizer.process(q, i) for i, q in enumerate(queries)]
        answers[device] = [r.places[0].hypothesis.key for r in results]
        if device == "cuda":
            assert localizer.config.precision == "fp16" and vpr_map.index.device == "cuda"
            assert localizer.backend_label.startswith("torch/cuda, fp16, CUDA graphs")
    agree = np.mean(np.array(answers["cpu"]) == np.array(answers["cuda"]))
    assert agree >= 0.9, answers
    vpr_map.index.to_device("cpu")


def test_padded_lightglue_pass_equals_kornia_unpruned(corridor_dir):
    """The dense pass the CUDA graph captures, run eagerly on the CPU: padded and masked to 512
    keypoints it gives exactly kornia's own matches without point pruning (a 300-keypoint pair too)."""
    from vpr_ros.core.matching.local_features import LocalFeatures
    from vpr_ros.core.matching.matchers import GraphedLightGlue

    extractor = LocalExtractor("xfeat", 512)
    query = extractor.extract([read_image(list_images(corridor_dir / "query")[3])])[0]
    cands = extractor.extract([read_image(p) for p in list_images(corridor_dir / "ref")[:4]])
    cands[2] = LocalFeatures(cands[2].keypoints[:300], cands[2].descriptors[:300], cands[2].scores[:300],
                             cands[2].image_size)
    matcher = Matcher("xfeat-lighterglue")
    matcher.net.conf.width_confidence = -1  # no pruning: the function the batched pass computes
    want = matcher.match(query, cands)
    dense = GraphedLightGlue(matcher.net, mixed=False, threshold=matcher.min_confidence)
    with torch.inference_mode():
        index, _ = dense.dense(*dense._pack([query], 512), *dense._pack(cands, 512)).numpy()
    for row, w in enumerate(want):
        q = np.flatnonzero(index[row] >= 0)
        assert set(zip(q, index[row, q].astype(int))) == set(zip(w.query_idx, w.map_idx)) and len(w) > 50


@needs_cuda
@pytest.mark.parametrize("preset", ["cosplace-r50-2048", "salad-dinov2-8448", "boq-dinov2-12288"])
@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.999), ("fp16", 0.99)])
def test_published_model_on_cuda_agrees_with_the_cpu(corridor_map, preset, precision, min_cosine):
    """The backbone (a ViT's (patch map, class token) pair included) under autocast and a CUDA graph,
    the aggregation (optimal transport, BoQ's attention) in fp32; untrained weights."""
    from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor

    _, queries = corridor_map
    descriptor = GlobalDescriptor(preset, random_weights=True)
    tensor = batch_to_tensor(queries[:4], descriptor.input_size)
    reference = descriptor.describe(tensor)
    got = TorchBackend(descriptor, "cuda", precision, cuda_graphs=True).describe(tensor)
    assert got.shape == reference.shape
    assert _cosine(got, reference).min() >= min_cosine


@needs_cuda
def test_batched_verifier_on_cuda_reads_nothing_back_and_agrees_with_the_cpu():
    """The fit under torch's sync debug mode ("error": any host synchronisation raises), then its
    decisions against the same fit on the CPU."""
    from vpr_ros.core.matching.ransac import BatchedVerifier

    rng = np.random.default_rng(0)
    pts0 = torch.from_numpy(rng.uniform(0, 640, (6, 256, 2)).astype(np.float32))
    shift = torch.from_numpy(rng.normal(0, 0.5, (6, 256, 2)).astype(np.float32))
    pts1 = pts0 + torch.tensor([30.0, 5.0]) + shift  # a translation: a homography and a fundamental matrix fit
    pts1[:, 150:] = torch.from_numpy(rng.uniform(0, 640, (6, 106, 2)).astype(np.float32))
    valid = torch.ones(6, 256, dtype=torch.bool)
    valid[3, 100:] = False
    size = torch.tensor([640.0, 480.0])
    cpu = BatchedVerifier()
    want = cpu.decide(cpu.fit(pts0, pts1, valid, torch.ones(6, 256), size, size.expand(6, 2)))
    gpu = BatchedVerifier(device="cuda")
    args = [t.cuda() for t in (pts0, pts1, valid, torch.ones(6, 256), size, size.expand(6, 2))]
    gpu.fit(*args)  # warm-up: library handles and workspaces
    torch.cuda.set_sync_debug_mode("error")
    try:
        fitted = gpu.fit(*args, own_generator=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    got = gpu.decide({k: v.cpu() for k, v in fitted.items()})
    assert [g.verified for g in got] == [w.verified for w in want]
    assert all(abs(g.inlier_count - w.inlier_count) <= 0.1 * max(w.inlier_count, 10) for g, w in zip(got, want))


@needs_cuda
@pytest.mark.parametrize("rerank", ["xfeat-lighterglue", "xfeat-mnn"])
def test_device_chain_is_one_capture_and_answers_like_the_cpu_chain(corridor_map, rerank):
    """The whole query (descriptor, search, gather, match, verification) captured as one CUDA graph and
    read back once, against the same chain run eagerly on the CPU; the eager CUDA chain under the sync
    debug mode first, so that a hidden synchronisation fails here rather than breaking the capture."""
    vpr_map, queries = corridor_map
    answers = {}
    for device in ("cpu", "cuda"):
        config = LocalizerConfig(top_k=5, rerank=rerank, device=device, backend="torch", verifier="torch",
                                 device_query="on", temporal_window=0)
        localizer = Localizer(config, vpr_map)
        if device == "cuda":
            chain = localizer.device_query
            assert chain.graphed and chain.reranker.table.resident
            from vpr_ros.core.inputs.images import batch_to_uint8

            images = chain.backend.upload(batch_to_uint8([queries[0]], chain.backend.input_size))
            size = torch.tensor([queries[0].shape[1], queries[0].shape[0]], dtype=torch.float32, device="cuda")
            chain.chain(images, size)  # warm-up outside the debug mode
            torch.cuda.set_sync_debug_mode("error")
            try:
                chain.chain(images, size)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        results = [localizer.process(q, i) for i, q in enumerate(queries)]
        answers[device] = [(r.places[0].hypothesis.key, r.places[0].verified) for r in results]
        if device == "cuda":
            assert len(localizer.device_query._calls[False]) == 1  # one capture for the whole chain
    agree = np.mean([a == b for a, b in zip(answers["cpu"], answers["cuda"])])
    assert agree >= 0.9, answers
    vpr_map.index.to_device("cpu")
