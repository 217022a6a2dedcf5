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
    **PUBLISHED_PRESETS,
}
# where a published model's weights come from: left out of the fingerprint, which hashes the weights themselves
WEIGHT_SOURCE_KEYS = ("checkpoint", "random_weights", "seed")


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
