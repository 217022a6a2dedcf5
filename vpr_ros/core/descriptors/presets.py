"""Named descriptor presets: `default` (XFeat + VLAD), `effnet-gem` (EfficientNet-Lite0 + GeM) and the
published architectures of models/, each a configuration dict merged with overrides."""

import copy

from vpr_ros.core.descriptors.models import PUBLISHED_PRESETS

PRESETS: dict[str, dict] = {
    "default": {
        "backbone": "xfeat",
        "aggregation": "vlad",
        "input_size": (640, 480),  # (width, height) the images are resized to; multiples of 32
        "clusters": 64,  # VLAD vocabulary size (docs/benchmarks.md compares 16, 32, 64)
        "kmeans_iters": 25,
        "kmeans_points_per_image": 400,  # local features sampled per map image for k-means
        "pca_dim": 256,  # output dimension after PCA-whitening
        "whiten_shrinkage": 1.0,  # eigenvalue shrinkage: scale 1/sqrt(ev + s * mean(ev))
        "min_frames_for_pca": 1000,  # below this many map frames the VLAD vector is used whole
        "index": "Flat",  # faiss index_factory string (inner product)
    },
    "effnet-gem": {
        "backbone": "efficientnet-lite0",
        "aggregation": "gem",
        "input_size": (640, 480),
        "gem_p": 3.0,
        "pca_dim": 256,
        "whiten_shrinkage": 1.0,
        "min_frames_for_pca": 1000,
        "index": "Flat",
    },
    "thumbnail": {  # for sequence matching on low-resolution cameras (down to 64x32) and under changing light
        "backbone": "thumbnail",
        "aggregation": "flatten",
        "input_size": (64, 32),  # area-downsampled to this; patches of 8 x 8 pixels are normalised
        "pca_dim": 256,
        "whiten_shrinkage": 1.0,
        "min_frames_for_pca": 1000,
        "index": "Flat",
    },
    **PUBLISHED_PRESETS,
}
# where a published model's weights come from: left out of the fingerprint, which hashes the weights themselves
WEIGHT_SOURCE_KEYS = ("checkpoint", "random_weights", "seed")


# presets whose networks take any input of multiples of 32 (the published ones keep their trained size)
SIZE_FREE = {"default": 32, "effnet-gem": 32, "thumbnail": 8}  # ... in multiples of this


def camera_input_size(preset: str, width: int, height: int) -> tuple[int, int]:
    """The input size (width, height) for a camera's `width` x `height` images: the preset's pixel count at the
    camera's aspect ratio, in the preset's multiples (32; 8 for thumbnails), so that nothing is stretched
    (1241x376 KITTI frames get 992x320, not 640x480); the preset's own size for 4:3 cameras and for presets
    of a fixed input size."""
    size = tuple(PRESETS[preset]["input_size"]) if preset in PRESETS else (640, 480)
    if preset not in SIZE_FREE or width <= 0 or height <= 0:
        return size
    pixels, aspect, multiple = size[0] * size[1], width / height, SIZE_FREE[preset]
    snap = lambda x: max(multiple, int(round(x / multiple)) * multiple)
    return snap((pixels * aspect) ** 0.5), snap((pixels / aspect) ** 0.5)


def preset_config(name: str, **overrides) -> dict:
    """The configuration of preset `name` with `overrides` merged in."""
    if name not in PRESETS:
        raise ValueError(f"unknown descriptor preset {name!r}; choose one of {sorted(PRESETS)}")
    conf = copy.deepcopy(PRESETS[name])
    unknown = set(overrides) - set(conf)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for preset {name!r}; known: {sorted(conf)}")
    conf.update(overrides)
    return conf
