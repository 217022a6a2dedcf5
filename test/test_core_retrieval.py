"""Core retrieval: image validation, descriptor presets, faiss index, metrics, and Corridor recall."""

import json

import numpy as np
import pytest
import torch

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.presets import preset_config
from vpr_ros.core.evaluation.metrics import latency_summary, recall_at_n
from vpr_ros.core.inputs.images import ImageError, batch_to_tensor, to_rgb8
from vpr_ros.core.map.index import DescriptorIndex


@pytest.mark.parametrize("image, expected", [
    (np.full((40, 50), 7, np.uint8), (40, 50, 3)),
    (np.full((40, 50, 1), 7, np.uint8), (40, 50, 3)),
    (np.full((40, 50, 4), 7, np.uint8), (40, 50, 3)),
    (np.full((40, 50, 3), 65535, np.uint16), (40, 50, 3)),
    (np.full((40, 50, 3), 0.5, np.float32), (40, 50, 3)),
])
def test_accepted_image_formats(image, expected):
    rgb = to_rgb8(image)
    assert rgb.shape == expected and rgb.dtype == np.uint8


def test_pixel_values_convert_exactly():
    assert to_rgb8(np.full((32, 32), 65535, np.uint16)).max() == 255
    assert to_rgb8(np.full((32, 32), 257 * 100, np.uint16)).max() == 100
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 9
    assert to_rgb8(rgba)[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("image, message", [
    (np.zeros((31, 100, 3), np.uint8), "outside the supported"),
    (np.zeros((100, 4001), np.uint8), "outside the supported"),
    (np.zeros((0, 0, 3), np.uint8), "outside the supported"),
    (np.zeros((64, 64, 2), np.uint8), "unsupported image shape"),
    (np.zeros((64, 64, 3), np.int32), "unsupported pixel type"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN or infinite"),
    ([[1, 2], [3, 4]], "expected a numpy array"),
])
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises(ImageError, match=message):
        to_rgb8(image)


def test_unknown_preset_and_option_are_rejected():
    with pytest.raises(ValueError, match="unknown descriptor preset 'netvlad'"):
        preset_config("netvlad")
    with pytest.raises(ValueError, match="unknown option"):
        preset_config("default", clusterz=3)


@pytest.fixture(scope="module")
def fitted_default():
    """The default preset with a small vocabulary fitted on random-texture images."""
    descriptor = GlobalDescriptor("default", clusters=8, input_size=(128, 96))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    descriptor.fit_vocabulary([batch_to_tensor(images, descriptor.input_size)])
    return descriptor, images


def test_descriptor_is_unit_norm_and_deterministic(fitted_default):
    descriptor, images = fitted_default
    tensor = batch_to_tensor(images, descriptor.input_size)
    out = descriptor.describe(tensor)
    assert out.shape == (4, 8 * 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out, descriptor.describe(tensor))
    # batched and one-by-one agree
    np.testing.assert_allclose(out[2], descriptor.describe(tensor[2:3])[0], rtol=1e-3, atol=1e-5)


def test_textureless_image_gives_a_finite_descriptor(fitted_default):
    descriptor, _ = fitted_default
    out = descriptor.describe(batch_to_tensor([np.zeros((96, 128, 3), np.uint8)], descriptor.input_size))
    assert np.isfinite(out).all()


def test_fitted_state_round_trips_with_fingerprint(fitted_default, tmp_path):
    descriptor, images = fitted_default
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((20, descriptor.dim)).astype(np.float32)
    fitted = GlobalDescriptor("default", clusters=8, input_size=(128, 96), min_frames_for_pca=10, pca_dim=6)
    fitted.load_fitted(descriptor.state_dict())
    assert fitted.fit_projection(raw) and fitted.dim == 6
    path = tmp_path / "descriptor.pt"
    torch.save(fitted.state_dict(), path)
    again = GlobalDescriptor("default", clusters=8, input_size=(128, 96), min_frames_for_pca=10, pca_dim=6)
    again.load_fitted(torch.load(path, weights_only=True))
    assert again.fingerprint() == fitted.fingerprint() != descriptor.fingerprint()
    tensor = batch_to_tensor(images, fitted.input_size)
    np.testing.assert_array_equal(again.describe(tensor), fitted.describe(tensor))


def test_small_map_keeps_full_descriptor(fitted_default):
    descriptor, _ = fitted_default
    assert not descriptor.fit_projection(np.ones((5, descriptor.dim), np.float32))
    assert descriptor.dim == 8 * 64


def test_vocabulary_needs_enough_features():
    descriptor = GlobalDescriptor("default", clusters=64, input_size=(32, 32))
    with pytest.raises(ValueError, match="its 64 clusters need at least 2496 .39 per cluster."):
        descriptor.fit_vocabulary([batch_to_tensor([np.zeros((32, 32, 3), np.uint8)], (32, 32))])


@pytest.mark.parametrize("factory, params", [("Flat", {}), ("HNSW16", {"efSearch": 64}),
                                             ("IVF4,Flat", {"nprobe": 4})])
def test_index_finds_exact_neighbours_and_grows(factory, params):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((400, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = DescriptorIndex(32, factory, params)
    index.train(data)
    index.add(data[:300])
    index.add(data[300:])  # incremental add continues the ids
    sims, ids = index.search(data[[0, 350]], 3)
    assert ids[:, 0].tolist() == [0, 350] and len(index) == 400
    np.testing.assert_allclose(sims[:, 0], 1.0, rtol=1e-4)


def test_index_edge_cases():
    index = DescriptorIndex(4)
    sims, ids = index.search(np.eye(4, dtype=np.float32)[:1], 3)
    assert ids.tolist() == [[-1, -1, -1]] and np.isneginf(sims).all()
    index.add(np.eye(4, dtype=np.float32)[:2])
    sims, ids = index.search(np.eye(4, dtype=np.float32)[:1], 3)
    assert ids[0].tolist()[:2] == [0, 1] and ids[0, 2] == -1 and np.isneginf(sims[0, 2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"must be N x 4"):
        index.search(np.zeros((1, 5), np.float32), 1)
    with pytest.raises(ValueError, match="invalid faiss index_factory"):
        DescriptorIndex(4, "NoSuchIndex")


def test_recall_and_latency_summary():
    ranked = np.array([[3, 1, 2], [0, 5, -1], [7, 8, 9]])
    recall = recall_at_n(ranked, [{1}, {0}, {4}], ns=(1, 2, 3))
    assert recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)}
    assert latency_summary([1.0, 2.0, 3.0])["p50"] == 2.0
    with pytest.raises(ValueError):
        recall_at_n(ranked, [{1}])


@pytest.mark.slow
def test_vpr_eval_on_corridor(corridor_dir, tmp_path):
    """The issue's command: vpr_eval --dataset corridor --preset default --json out.json."""
    from vpr_ros.tools.eval import main

    out = tmp_path / "out.json"
    assert main(["--dataset", str(corridor_dir), "--preset", "default", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert set(report["recall"]) == {"1", "5", "10"}
    assert report["recall"]["1"] >= 0.85, report["recall"]  # goal of the core issue
    assert report["recall"]["1"] <= report["recall"]["5"] <= report["recall"]["10"]
    assert {"preprocess", "descriptor", "search", "total"} <= set(report["latency_ms"])
    assert report["latency_ms"]["total"]["p50"] > 0


def test_vpr_eval_reports_a_bad_dataset(tmp_path, capsys):
    from vpr_ros.tools.eval import main

    assert main(["--dataset", str(tmp_path), "--quiet"]) == 2
    assert "ground_truth.csv" in capsys.readouterr().err


def test_gpu_search_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here: test_cuda.py checks GPU search against the CPU index")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        DescriptorIndex(8, device="cuda")
    index = DescriptorIndex(8)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        index.to_device("cuda")
    assert index.label == "faiss Flat/cpu"
