"""ONNX export of the descriptor presets and the ONNX Runtime backend: agreement with torch on real
images, the cache keyed by fingerprint, refusals, the Localizer and the node on onnxruntime, vpr_export."""

import json

import numpy as np
import pytest
import torch

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import list_images, read_image
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.map_builder import build_map
from vpr_ros.core.build.sources import load_image_file
from vpr_ros.core.runtime.backends import OnnxRuntimeBackend, TorchBackend, make_backend
from vpr_ros.core.runtime.export import export_onnx, onnx_path, read_export_metadata


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module", params=["default", "effnet-gem", "thumbnail"])
def fitted_map(request, corridor_dir):
    """A 30-frame Corridor map of each preset (vocabulary fitted on it) and query images."""
    refs = list_images(corridor_dir / "ref")[:30]
    vpr_map = build_map(f"corridor-{request.param}", FrameTable.build(np.arange(30), refs), load_image_file,
                        request.param)
    queries = [read_image(p) for p in list_images(corridor_dir / "query")[:30]]
    return vpr_map, queries


def _relative(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_onnxruntime_agrees_with_torch_on_real_images(fitted_map, tmp_path):
    vpr_map, queries = fitted_map
    path = export_onnx(vpr_map.descriptor, tmp_path / "d.onnx")
    meta = read_export_metadata(path)
    assert meta["fingerprint"] == vpr_map.descriptor.fingerprint() and meta["dim"] == vpr_map.descriptor.dim
    backend = OnnxRuntimeBackend(path, vpr_map.descriptor.fingerprint())
    for batch in ([queries[0]], queries[1:4], queries[4:12]):  # dynamic batch: 1, 3, 8
        tensor = batch_to_tensor(batch, vpr_map.descriptor.input_size)
        got, want = backend.describe(tensor), vpr_map.descriptor.describe(tensor)
        assert got.shape == want.shape == (len(batch), vpr_map.descriptor.dim)
        assert _relative(got, want).max() < 1e-3
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_the_cache_is_keyed_by_fingerprint_and_refuses_a_foreign_export(fitted_map, tmp_path):
    vpr_map, _ = fitted_map
    backend = make_backend("onnxruntime", vpr_map.descriptor)
    assert backend.path == onnx_path(vpr_map.descriptor.fingerprint()) and backend.label == "onnxruntime/cpu"
    mtime = backend.path.stat().st_mtime_ns
    assert make_backend("onnxruntime", vpr_map.descriptor).path.stat().st_mtime_ns == mtime  # reused
    with pytest.raises(ValueError, match="belongs to descriptor"):
        OnnxRuntimeBackend(backend.path, "0" * 64)
    meta = backend.path.with_suffix(".json")
    meta.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a vpr_ros descriptor export"):
        OnnxRuntimeBackend(backend.path, vpr_map.descriptor.fingerprint())
    assert make_backend("onnxruntime", vpr_map.descriptor).path.stat().st_mtime_ns != mtime  # re-exported
    with pytest.raises(FileNotFoundError, match="vpr_export"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx", vpr_map.descriptor.fingerprint())


def test_asking_for_cuda_where_there_is_none_is_an_error(fitted_map):
    import onnxruntime as ort

    vpr_map, _ = fitted_map
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TorchBackend(vpr_map.descriptor, "cuda")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            make_backend("onnxruntime", vpr_map.descriptor, "cuda")
    with pytest.raises(ValueError, match="unknown descriptor backend"):
        make_backend("tensorrt-fp64", vpr_map.descriptor)
    with pytest.raises(ValueError, match="backend must be one of"):
        LocalizerConfig(backend="openvino")


def test_localizer_on_onnxruntime_answers_like_torch(fitted_map):
    vpr_map, queries = fitted_map
    torch_loc = Localizer(LocalizerConfig(top_k=5, rerank="off"), vpr_map)
    torch_keys = [torch_loc.process(q, i).places[0].hypothesis.key for i, q in enumerate(queries[:10])]
    ort_loc = Localizer(LocalizerConfig(top_k=5, rerank="off", backend="onnxruntime"), vpr_map)
    results = [ort_loc.process(q, i) for i, q in enumerate(queries[:10])]
    assert ort_loc.backend_label == "onnxruntime/cpu"
    assert [r.places[0].hypothesis.key for r in results] == torch_keys


def test_vpr_export_cli(fitted_map, tmp_path, capsys):
    from vpr_ros.tools import export

    vpr_map, _ = fitted_map
    folder = vpr_map.save(tmp_path / "map")
    assert export.main([str(folder), "--check", "4"]) == 0
    out = capsys.readouterr().out
    assert "ok tolerance" in out and onnx_path(vpr_map.descriptor.fingerprint()).is_file()
    assert "map images" in out
    assert export.main([str(tmp_path / "nomap")]) == 2
    assert "vpr_export: error" in capsys.readouterr().err


def test_tensorrt_is_refused_clearly_where_it_cannot_run(fitted_map):
    from vpr_ros.core.runtime.tensorrt import tensorrt_available

    vpr_map, _ = fitted_map
    usable, why = tensorrt_available()
    if usable:
        pytest.skip("TensorRT and CUDA exist here; the refusal is for machines without them")
    with pytest.raises(ValueError, match="tensorrt backend was asked for but"):
        make_backend("tensorrt", vpr_map.descriptor, "cuda")
    assert why


def test_tensorrt_engine_agrees_with_torch_and_is_cached(fitted_map, tmp_path):
    from vpr_ros.core.runtime.tensorrt import TensorRTBackend, tensorrt_available

    usable, why = tensorrt_available()
    if not usable:
        pytest.skip(f"TensorRT cannot run here: {why}")
    vpr_map, queries = fitted_map
    engine = TensorRTBackend(vpr_map.descriptor, "cuda", "fp16", max_batch=4)
    tensor = batch_to_tensor(queries[:6], vpr_map.descriptor.input_size)  # 6 > max_batch: runs in chunks
    got, want = engine.describe(tensor), vpr_map.descriptor.cpu().describe(tensor)
    assert got.shape == want.shape and _relative(got, want).max() < 2e-2  # FP16
    mtime = engine.path.stat().st_mtime_ns
    again = TensorRTBackend(vpr_map.descriptor, "cuda", "fp16", max_batch=4)
    assert again.path == engine.path and engine.path.stat().st_mtime_ns == mtime  # cached, not rebuilt
    meta = engine.path.with_suffix(".json")
    meta.write_text(meta.read_text().replace('"tensorrt": "', '"tensorrt": "0.0-'))
    with pytest.raises(ValueError, match="built for another tensorrt"):
        TensorRTBackend(vpr_map.descriptor, "cuda", "fp16", max_batch=4, rebuild=False)
    TensorRTBackend(vpr_map.descriptor, "cuda", "fp16", max_batch=4)  # rebuilt
    assert engine.path.stat().st_mtime_ns != mtime
