"""LocalizerConfig: every setting that decides what a frame yields, with its default, description and
allowed values, in one place.

The node declares one parameter per field (ros/parameters.py), `config/localize.yaml` is generated
from the same table, and the tools' flags take their names, defaults and help from it
(tools/config_args.py). The defaults are what a robot gets without tuning: re-ranking with geometric
verification and agreement of the previous frame, so that published loop closures are ones a
pose-graph back-end can take (docs/benchmarks.md has their precision and recall).

A stage's defaults live with the stage (matching/metric.py's MetricSettings, matching/geometry.py's
inlier thresholds, retrieval/prior.py's RadiusPolicy, retrieval/sequence.py's step) and are read from there. This module imports no torch, so that the launch file and the
parameter table can use it.
"""

import dataclasses
from dataclasses import dataclass, field

from vpr_ros.core.matching.geometry import MIN_INLIER_RATIO, MIN_INLIERS, MIN_KEYPOINT_SHARE
from vpr_ros.core.matching.metric import MetricSettings
from vpr_ros.core.retrieval.prior import RadiusPolicy
from vpr_ros.core.retrieval.sequence import MAX_STEP

MODES = ("localize", "slam")
# Names of the plugin registries, written out so that importing this module does not import torch;
# a test keeps each equal to its registry (matching.matchers.MATCHERS, runtime.backends.BACKENDS).
MATCHER_NAMES = ("xfeat-lighterglue", "aliked-lightglue", "disk-lightglue", "xfeat-mnn")
BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp16", "fp32")  # runtime.devices.PRECISIONS
VERIFIERS = ("auto", "opencv", "torch")
SWITCHES = ("auto", "on", "off")
RERANK_OFF = ("off", "")

AUTO_MIN_PROBABILITY = 0.5  # accept_min_probability < 0: the risk-controlled threshold, never below this
METRIC, RADIUS = MetricSettings(), RadiusPolicy()  # the defaults of the metric step and of a prior's search radius

def setting(default, description: str, spec=None):
    """A config field: `spec` is a tuple of choices (strings) or an inclusive (low, high) range (numbers)."""
    return field(default=default, metadata={"description": description, "spec": spec})


@dataclass
class LocalizerConfig:
    """What the per-frame pipeline does; `rerank` "off" and a negative `skip_margin` become None."""

    mode: str = setting("localize", "localize: against a prebuilt map; slam: online loop closure", MODES)
    top_k: int = setting(5, "hypotheses per frame (re-ranked ones when rerank is set)", (1, 100))
    rerank: str | None = setting(
        "xfeat-mnn", "matcher for re-ranking with geometric verification, or off (global retrieval only: loop "
        "closures then need a calibrated map or temporal agreement)", RERANK_OFF + MATCHER_NAMES)
    rerank_top_k: int = setting(0, "re-rank only the first this-many of the top_k hypotheses, the rest follow "
                                   "in global order (0: all)", (0, 100))
    skip_margin: float | None = setting(-1.0, "verify only the first candidate when it leads by this cosine "
                                              "margin (<0: off)", (-1.0, 2.0))
    matcher_layers: int = setting(0, "LightGlue-style matchers: run only the first this-many attention layers (0: "
                                     "all; each layer has a trained assignment head, fewer trade accuracy for time)",
                                  (0, 9))
    skip_min_probability: float | None = setting(
        -1.0, "verify only the first candidate when the map's calibrated probability that the global first "
              "candidate is right reaches this (maps with an uncertainty model; <0: off)", (-1.0, 1.0))
    verifier: str = setting("auto", "geometric verification of re-ranked candidates: opencv (MAGSAC++ per pair, pairs "
                                    "in parallel threads), torch (batched RANSAC, all candidates in one call on the "
                                    "configured device), auto (torch on CUDA, opencv on the CPU, where it is faster)",
                            VERIFIERS)
    sequence_length: int = setting(0, "sequence matching: rank map frames by how the last this-many processed frames "
                                      "line up with an ordered map along a plausible velocity (0: off, single-image "
                                      "ranking; retrieval/sequence.py); single-image until the window fills", (0, 200))
    sequence_max_step: int = setting(MAX_STEP, "sequence matching: most map frames the robot may advance per processed frame "
                                        "(its speed against the map's frame spacing; skipped frames widen it)", (1, 50))
    sequence_similarity: str = setting(
        "centred", "sequence matching: the similarity rows it aligns. centred (map mean removed from the map, the query "
                   "stream's running mean from each query: for revisits under another light or season), plain "
                   "(cosines: for revisits in the map's own conditions, or from another camera height)",
        ("centred", "plain"))
    accept_min_sequence_score: float = setting(
        0.0, "loop closure with sequence matching, maps without a calibrator: mean normalised similarity (z-score "
             "over the map) along the best hypothesis's alignment (0: off)", (0.0, 100.0))
    min_inliers: int = setting(MIN_INLIERS, "inliers a verified candidate needs", (4, 100000))
    min_inlier_ratio: float = setting(MIN_INLIER_RATIO, "share of matches that must be inliers", (0.0, 1.0))
    min_keypoint_share: float = setting(
        MIN_KEYPOINT_SHARE, "inliers a verified candidate needs as a share of the smaller keypoint count of the two images: "
                            "a look-alike (repeated facade, the same doors down a corridor) agrees on a few objects, not "
                            "on the view (0: off)", (0.0, 1.0))
    accept_min_inliers: int = setting(30, "loop closure: inliers of the best hypothesis (with re-ranking)",
                                      (0, 100000))
    accept_min_similarity: float = setting(0.5, "loop closure: global similarity of the best hypothesis",
                                           (-1.0, 1.0))
    accept_min_probability: float = setting(
        0.9, "loop closure, maps with a calibrator: probability the best hypothesis needs (replaces the similarity "
             "and inlier thresholds); <0: the lowest at which the expected share of frames closing a false loop stays "
             "at most accept_max_false_rate on the calibration queries (conformal risk control), and at least 0.5",
        (-1.0, 1.0))  # docs/uncertainty.md, docs/posegraph.md: why 0.9
    accept_max_false_rate: float = setting(
        0.01, "loop closure with accept_min_probability < 0: the false-closure rate per frame the threshold is chosen "
              "to bound (a calibration of n queries certifies at least 1/(n+1))", (0.0001, 0.5))
    temporal_window: int = setting(1, "loop closure: previous frames whose best candidates must agree (0: off)",
                                   (0, 100))
    temporal_tolerance: int = setting(5, "... within this many map keys", (0, 100000))
    exclude_recent_s: float = setting(20.0, "slam: ignore map frames this recent", (0.0, 1e6))
    exclude_recent_frames: int = setting(10, "slam: ignore the newest this-many keyframes (of this session; earlier "
                                             "sessions of the starting map are never excluded)", (0, 100000))
    session_id: str = setting("", "slam: id of this session in the online map, and of the frames vpr/save_map appends "
                                  "(empty: slam-<start time, UTC>)")
    robot_id: str = setting("", "this robot's id, carried by every hypothesis and loop closure message and recorded "
                                "with this session's frames (empty: the node's namespace without its leading slash)")
    prior_k_sigma: float = setting(RADIUS.k_sigma, "search with a position prior: map frames within this many standard deviations "
                                        "of the prior (its largest horizontal one) are searched (in 2-D, 3 sigma "
                                        "leaves the robot outside 1.1 % of the time, 4 sigma 0.03 %)", (0.1, 100.0))
    prior_min_radius_m: float = setting(RADIUS.min_m, "search with a position prior: the search radius is at least this "
                                              "(metres)", (0.0, 1e7))
    prior_max_radius_m: float = setting(RADIUS.max_m, "search with a position prior: ... and at most this (metres)",
                                        (0.0, 1e7))
    prior_max_age_s: float = setting(2.0, "a position prior older (or newer) than this against the frame's stamp is "
                                          "stale: the whole map is searched", (0.0, 1e6))
    pose_sigma_m: float = setting(2.0, "standard deviation (m) of vpr/pose's position (a matched map frame's pose, no "
                                       "metric one); with probabilities, doubt among the hypotheses' poses widens it",
                                  (0.0, 1e6))
    bootstrap_frames: int = setting(30, "slam without a map: keyframes collected to fit the vocabulary",
                                    (2, 100000))
    preset: str = setting("default", "slam without a map: descriptor preset")
    checkpoint: str = setting("", "weights file of a published-model preset (cosplace-*, salad-*, ...): for slam "
                                  "without a map, or for a map whose weights moved (empty: the path the map "
                                  "records)")
    max_keypoints: int = setting(512, "slam without a map: local features per keyframe (with rerank)", (16, 8192))
    device: str = setting("auto", "device of the descriptor, local features, matcher and search: auto (cuda when "
                                  "a GPU is visible, else cpu), cpu or cuda[:N]; cuda without a GPU is an error")
    precision: str = setting("auto", "torch on CUDA: fp16 (backbone and matcher under autocast) or fp32; auto is "
                                     "fp16 on CUDA and fp32 on the CPU", PRECISIONS)
    backend: str = setting("auto", "descriptor backend: auto (onnxruntime on the CPU when it agrees with torch, "
                                   "else torch), torch, onnxruntime, or tensorrt (with device cuda); the map's "
                                   "descriptor is exported (and the engine built) into the cache on first use",
                           BACKEND_NAMES)
    device_query: str = setting("auto", "localize mode: keep the whole query on the device, read back once per frame "
                                        "(joint XFeat descriptor graph, exact search, xfeat matcher, batched "
                                        "verification; pipeline/device_chain.py): on, off, or auto (the stage pipeline "
                                        "until the chain is measured on a GPU: docs/gpu.md)", SWITCHES)
    metric_min_inliers: int = setting(METRIC.min_inliers, "metric loop closure (depth): PnP inliers the metric pose needs, else the "
                                          "edge keeps a translation direction only", (6, 100000))
    metric_pixel_sigma: float = setting(METRIC.pixel_sigma, "metric loop closure: keypoint noise per view (pixels of a 640-pixel-wide "
                                             "image) the pose covariance assumes", (0.05, 50.0))
    depth_sigma_m: float = setting(METRIC.depth_sigma_m, "metric loop closure: depth noise at zero range (m); the noise model is "
                                         "depth_sigma_m + depth_sigma_per_m2 * z^2", (0.0, 10.0))
    depth_sigma_per_m2: float = setting(METRIC.depth_sigma_per_m2, "metric loop closure: growth of the depth noise with the square of the "
                                               "range (1/m; 0.002 is 2 % at 10 m, a ZED 2 or D455 class camera)",
                                        (0.0, 1.0))
    cpu_threads: int = setting(0, "CPU threads of torch, ONNX Runtime, faiss and verification (0: every core "
                                  "the process may use); fewer leave cores to the robot's other processes",
                               (0, 1024))

    def __post_init__(self):
        if self.rerank is None or self.rerank in RERANK_OFF:
            self.rerank = None
        if self.skip_margin is not None and self.skip_margin < 0:
            self.skip_margin = None
        if self.skip_min_probability is not None and self.skip_min_probability < 0:
            self.skip_min_probability = None
        for f in dataclasses.fields(self):
            check_value(f, getattr(self, f.name))
        if self.prior_min_radius_m > self.prior_max_radius_m:
            raise ValueError(f"prior_min_radius_m ({self.prior_min_radius_m}) must not exceed prior_max_radius_m "
                             f"({self.prior_max_radius_m})")
        if self.sequence_length == 1:
            raise ValueError("sequence_length must be 0 (off) or at least 2 frames, got 1")

    def as_parameters(self) -> dict:
        """The node parameter values that give this configuration (None back to "off" and -1)."""
        values = dataclasses.asdict(self)
        values["rerank"] = self.rerank or "off"
        values["skip_margin"] = -1.0 if self.skip_margin is None else self.skip_margin
        values["skip_min_probability"] = -1.0 if self.skip_min_probability is None else self.skip_min_probability
        return values


def check_value(f: dataclasses.Field, value) -> None:
    """Raise ValueError unless `value` is allowed for config field `f` (None stands for an option that is off)."""
    spec = f.metadata["spec"]
    if value is None or spec is None:
        return
    if isinstance(f.default, str):
        if value not in spec:
            raise ValueError(f"{f.name} must be one of {list(spec)}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{f.name} must be a number, got {value!r}")
    elif not spec[0] <= value <= spec[1]:
        raise ValueError(f"{f.name} must lie in [{spec[0]}, {spec[1]}], got {value!r}")


def settings() -> dict[str, tuple]:
    """name -> (default, description, spec) of every LocalizerConfig field, in declaration order."""
    return {f.name: (f.default, f.metadata["description"], f.metadata["spec"])
            for f in dataclasses.fields(LocalizerConfig)}
