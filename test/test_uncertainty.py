"""BayesCap head, calibrators, confidence metrics and the trained uncertainty model on real Corridor images."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from vpr_ros.core.evaluation.metrics import auroc, average_precision, precision_at_recall, reliability
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.uncertainty.bayescap import (BayesCapHead, bayescap_loss, descriptor_uncertainty, fit_head,
                                               generalized_gaussian_nll, variance)
from vpr_ros.core.uncertainty.calibration import Calibrator
from vpr_ros.core.uncertainty.features import (ALL_FEATURES, GEOMETRY_FEATURES, baseline_scores, geometry_features,
                                               hypothesis_features, position_covariance, select, spatial_spread)

from conftest import corridor40_map

FAST = {"epochs": 5, "views": 2, "positive_distance_m": 2.0}


# ---- the loss and the head ------------------------------------------------------------------------
def test_power_form_is_the_generalized_gaussian_likelihood():
    r = torch.tensor([0.0, 0.3, 1.0, 2.5], dtype=torch.float64)
    alpha, beta = torch.tensor(0.7, dtype=torch.float64), torch.tensor(1.6, dtype=torch.float64)
    nll = generalized_gaussian_nll(r, torch.zeros_like(r), alpha.expand(4), beta.expand(4))
    # density beta / (2 alpha Gamma(1/beta)) exp(-(|r|/alpha)^beta); the loss drops log 2
    log_pdf = torch.log(beta / (2 * alpha)) - torch.lgamma(1 / beta) - (r.abs() / alpha) ** beta
    assert torch.allclose(nll, -log_pdf - math.log(2), atol=1e-5)  # eps in log(r + eps) is the only change
    # beta = 2 is a Gaussian with variance alpha^2 / 2; beta = 1 a Laplace with variance 2 alpha^2
    assert torch.isclose(variance(alpha, torch.tensor(2.0, dtype=torch.float64)), alpha ** 2 / 2)
    assert torch.isclose(variance(alpha, torch.tensor(1.0, dtype=torch.float64)), 2 * alpha ** 2)


def test_loss_is_finite_with_gradients_on_identical_and_extreme_inputs():
    head = BayesCapHead(32, rank=8, hidden=16)
    head.fit_projection(torch.nn.functional.normalize(torch.randn(20, 32), dim=1).numpy())
    y = torch.nn.functional.normalize(torch.randn(4, 32), dim=1)
    for other in (y.clone(), -y * 1e3, torch.zeros_like(y)):
        loss = bayescap_loss(head(y), head.project(other))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters())
        head.zero_grad()
    x, mean, alpha, beta = head(y)
    assert x.shape == mean.shape == alpha.shape == beta.shape == (4, 8) and (alpha > 0).all() and (beta >= 0.2).all()
    with pytest.raises(ValueError, match="B x 32"):
        head(torch.zeros(2, 31))
    assert BayesCapHead(16, rank=64).rank == 16  # the rank never exceeds the descriptor's dimension


def test_low_rank_head_learns_which_directions_vary_between_views_and_scores_pairs():
    """Synthetic places: views of a place differ along 4 'nuisance' directions of a 64-d space and agree on
    the rest. The head, trained on views, must find the nuisance directions (larger predicted scale there)
    and its pair likelihood must rank views of one place above different places."""
    from vpr_ros.core.uncertainty.model import UncertaintyModel

    rng = np.random.default_rng(0)
    places = rng.normal(size=(60, 64))
    nuisance = np.zeros(64)
    nuisance[:4] = 1.0

    def view(p):
        return p + rng.normal(size=p.shape) * (0.05 + 1.5 * nuisance)

    table = np.concatenate([view(places), view(places), view(places)]).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    n = len(places)
    pairs = np.array([(i + a * n, i + b * n) for i in range(n) for a, b in ((0, 1), (0, 2), (1, 2))])
    head, stats = fit_head(table, pairs, {"rank": 16, "hidden": 32}, epochs=60)
    assert stats["rank"] == 16 and stats["train_loss"][-1] < stats["train_loss"][0]
    model = UncertaintyModel(head, {}, "test")
    fresh = np.stack([view(places), view(places)]).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=2, keepdims=True)
    same = np.array([model.describe(fresh[0, i], fresh[1, [i]])[2][0] for i in range(n)])
    other = np.array([model.describe(fresh[0, i], fresh[1, [(i + 7) % n]])[2][0] for i in range(n)])
    assert auroc(np.r_[same, other], np.r_[np.ones(n, bool), np.zeros(n, bool)]) > 0.95
    query_u, map_u, pair = model.describe(fresh[0, 0], fresh[1, :3])
    assert np.isfinite(query_u) and map_u.shape == pair.shape == (3,)
    nan_row = fresh[1, :2].copy()
    nan_row[1, 0] = np.nan
    assert np.isnan(model.describe(fresh[0, 0], nan_row)[2][1]) and np.isfinite(model.describe(fresh[0, 0], nan_row)[2][0])


def test_uncertainty_of_a_nan_descriptor_is_nan_not_an_error():
    head = BayesCapHead(16, rank=4, hidden=8)
    rows = np.ones((3, 16), np.float32) / 4
    rows[1, 3] = np.nan
    u = descriptor_uncertainty(head, rows)
    assert np.isfinite(u[[0, 2]]).all() and np.isnan(u[1])


# ---- calibrators and metrics --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logistic", "isotonic"])
def test_calibrator_learns_a_monotone_probability_and_round_trips(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = rng.random(600) < 1 / (1 + np.exp(-(2 * x[:, 0] - 1)))
    cal = Calibrator(["a", "b"], kind).fit(x, y)
    grid = np.stack([np.linspace(-3, 3, 50), np.zeros(50)], axis=1)
    p = cal.predict(grid)
    assert (np.diff(p) >= -1e-12).all() and p[0] < 0.1 and p[-1] > 0.9
    assert abs(cal.predict(x).mean() - y.mean()) < 0.05
    again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    assert np.allclose(again.predict(grid), p)
    assert np.isnan(cal.predict(np.array([[np.nan, 0.0]]))).all()


def test_calibrator_is_monotone_in_the_evidence_even_when_the_fit_would_not_be():
    """Two features that move together: unconstrained, the second gets a negative weight (more inliers would
    lower the probability); declared increasing, its weight is held at 0 and the probability never falls."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=400)
    b = a + rng.normal(size=400)
    y = rng.random(400) < 1 / (1 + np.exp(-(3 * a - 1.5 * b)))
    x = np.stack([a, b], axis=1)
    free = Calibrator(["similarity", "log_inliers"]).fit(x, y)
    assert free.coef[1] < 0
    tied = Calibrator(["similarity", "log_inliers"], increasing=["similarity", "log_inliers"]).fit(x, y)
    assert tied.coef[1] == 0.0 and tied.coef[0] > 0
    grid = np.stack([np.zeros(30), np.linspace(-3, 3, 30)], axis=1)
    assert (np.diff(tied.predict(grid)) >= 0).all()
    again = Calibrator.from_json(json.loads(json.dumps(tied.to_json())))
    assert again.increasing == ["similarity", "log_inliers"] and again.full_precision == tied.full_precision


def test_full_precision_point_of_a_calibrated_curve():
    from vpr_ros.core.uncertainty.calibration import full_precision_threshold

    p = np.array([0.99, 0.95, 0.9, 0.8, 0.7])
    assert full_precision_threshold(p, np.array([1, 1, 0, 1, 0], bool)) == 0.95
    assert full_precision_threshold(p, np.array([0, 1, 1, 1, 1], bool)) == 1.0  # the most probable is wrong
    assert full_precision_threshold(p, np.ones(5, bool)) == 0.7


def test_risk_threshold_bounds_false_acceptances_by_conformal_risk_control():
    """(#wrong at or above the threshold + 1) / (n + 1) <= alpha, at the lowest such threshold; below what n
    rows can certify, nothing short of certainty is accepted."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    y = rng.random(400) < 1 / (1 + np.exp(-3 * x[:, 0]))
    cal = Calibrator(["similarity"], increasing=["similarity"]).fit(x, y)
    p = cal.predict(x)
    assert len(cal.wrong_probabilities) == (~y).sum() and cal.fitted_on == 400
    for alpha in (0.01, 0.05, 0.2):
        t = cal.risk_threshold(alpha)
        wrong_above = int(((p >= t) & ~y).sum())
        assert (wrong_above + 1) / 401 <= alpha + 1e-12
        below = np.nextafter(cal.wrong_probabilities[cal.wrong_probabilities < t].max(), -np.inf)
        assert (int(((p >= below) & ~y).sum()) + 1) / 401 > alpha  # one step lower breaks the bound
    assert cal.risk_threshold(0.001) == 1.0  # 1 / 401 > 0.001: not certifiable
    assert cal.risk_threshold(0.01) >= cal.risk_threshold(0.05) >= cal.risk_threshold(0.2)
    again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    assert again.risk_threshold(0.05) == cal.risk_threshold(0.05)
    with pytest.raises(ValueError, match="alpha"):
        cal.risk_threshold(0.0)
    old = cal.to_json()
    del old["wrong_probabilities"]  # a calibrator stored before issue 41 keeps its full-precision point
    assert Calibrator.from_json(old).risk_threshold(0.01) == cal.full_precision


def test_calibrator_refuses_one_class_and_bad_shapes():
    with pytest.raises(ValueError, match="true and false"):
        Calibrator(["a"]).fit(np.zeros((5, 1)), np.ones(5, bool))
    with pytest.raises(ValueError, match="P x 1"):
        Calibrator(["a"]).fit(np.zeros((5, 2)), np.r_[True, False, True, False, True])
    with pytest.raises(ValueError, match="unknown calibrator kind"):
        Calibrator(["a"], "platt")
    # a constant feature is not an error: it just carries no weight
    cal = Calibrator(["a"]).fit(np.ones((6, 1)), np.r_[True, True, True, True, False, False])
    assert abs(cal.predict(np.ones((1, 1)))[0] - 4 / 6) < 0.02


def test_ranking_and_calibration_metrics_on_hand_computed_cases():
    correct = np.array([1, 1, 0, 1, 0], bool)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    assert average_precision(score, correct) == pytest.approx((1 + 1 + 0.75) / 3)
    assert auroc(score, correct) == pytest.approx(5 / 6)
    assert precision_at_recall(score, correct, 1.0) == pytest.approx(0.75)
    assert precision_at_recall(score, correct, 0.6) == pytest.approx(1.0)
    assert auroc(-score, correct) == pytest.approx(1 / 6)
    # ties form one threshold: a constant score ranks nothing
    assert auroc(np.ones(5), correct) == pytest.approx(0.5)
    assert average_precision(np.ones(5), correct) == pytest.approx(0.6)
    # perfectly calibrated bins give ECE 0; a confident wrong answer gives ECE 1
    probs = np.r_[np.full(8, 0.25), np.full(8, 0.75)]
    labels = np.r_[np.arange(8) < 2, np.arange(8) < 6]
    assert reliability(probs, labels)["ece"] == pytest.approx(0.0)
    assert reliability(np.array([1.0]), np.array([False]))["ece"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([np.nan, 1.0]), np.array([True, False]))


def test_features_and_baselines():
    sims = np.array([0.8, 0.6, 0.59])
    geometry = geometry_features([100, 3, 0], [0.5, 0.1, np.nan], [0.2, 0.006, np.nan], [-40.0, np.inf, np.nan],
                                 [0.3, 0.01, np.nan])
    f = hypothesis_features(sims, 1e-4, np.array([1e-4, 2e-4, 3e-4]), np.array([-1.0, -2.0, -3.0]), geometry)
    assert f.shape == (3, len(ALL_FEATURES)) and np.isnan(f[:, -1]).all()  # no sequence score
    assert np.allclose(f[:, 1], [0.2, -0.2, -0.21]) and np.allclose(f[:, 2], [1, 0, 0])
    assert np.allclose(f[:, 5], [-1, -2, -3])
    g = select(f, GEOMETRY_FEATURES)
    assert np.allclose(g[:, 0], np.log1p([100, 3, 0])) and np.allclose(g[:, 1], [0.5, 0.1, 0])
    assert np.allclose(g[:, 3], [40, 0, 0])  # -log10 NFA; chance (NFA inf) and unmatched give no evidence
    assert np.isnan(select(hypothesis_features(sims, 1e-4, np.ones(3), np.ones(3)), GEOMETRY_FEATURES)).all()
    positions = np.array([[0.0, 0, 0], [50, 0, 0], [51, 0, 0]])
    b = baseline_scores(sims, positions, 1e-4, 100, -1.0)
    assert b["l2"] == pytest.approx(-math.sqrt(0.4)) and b["inliers"] == 100 and b["pair_likelihood"] == -1.0
    assert b["pa"] == pytest.approx(1 - math.sqrt(0.4) / math.sqrt(0.8))
    assert spatial_spread(sims, positions) < 1.0 < 100 < spatial_spread(np.array([0.6, 0.6, 0.6]), positions)
    # a confident best keeps sigma^2; doubt towards a place 50 m away widens x only
    sure = position_covariance(positions, np.array([1.0, 0.0, 0.0]), 2.0)
    doubt = position_covariance(positions, np.array([0.5, 0.4, 0.1]), 2.0)
    assert np.allclose(sure, 4 * np.eye(3))
    assert doubt[0, 0] > 1000 and doubt[1, 1] == pytest.approx(4.0)


def test_positive_pairs_from_poses_and_from_route_order():
    from vpr_ros.core.build.uncertainty_training import positive_pairs, same_place

    pose = np.zeros((6, 7))
    pose[:, 0] = [0, 1, 2, 10, 11, 0.5]
    pose[:, 6] = 1.0
    pose[5, 3:] = [0, 0, 1, 0]  # frame 5: close to frame 0 but facing the other way
    frames = FrameTable.build(np.arange(6), list("abcdef"), pose=pose)
    pairs, how = positive_pairs(frames, 1.5, 45.0, 2)
    assert how == "poses" and {tuple(p) for p in pairs} == {(0, 1), (1, 2), (3, 4)}
    assert same_place(frames, 0, np.array([1, 2, 5]), how, 1.5, 45.0, 2).tolist() == [True, False, False]
    unposed = FrameTable.build(np.arange(5), list("abcde"))
    pairs, how = positive_pairs(unposed, 1.5, 45.0, 2)
    assert how == "route order" and len(pairs) == 4 + 3


# ---- a trained model on a real map --------------------------------------------------------------
@pytest.fixture(scope="module")
def small_map(corridor_dir):
    """40 Corridor references with poses 1 m apart and XFeat local features (images still readable)."""
    return corridor40_map(corridor_dir)


@pytest.fixture(scope="module")
def trained(small_map):
    from vpr_ros.core.matching.geometry import GeometricVerifier
    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.core.build.uncertainty_training import train_uncertainty

    model = train_uncertainty(small_map, FAST, [Reranker("xfeat-mnn", GeometricVerifier())])
    return small_map, model


@pytest.mark.slow
def test_training_yields_calibrated_probabilities_for_both_rankings(trained):
    vpr_map, model = trained
    t = model.training
    assert t["positives"] == "poses" and t["calibration_views"].startswith("synthetic views")
    assert t["calibration_queries"] == 2 * 12 and np.isfinite(t["train_loss"])
    # views of the training frames add pairs to the map's own
    assert t["view_pairs"] > t["train_pairs"] and t["rank"] <= 64
    assert {"global", "rerank:xfeat-mnn", "baseline:l2", "baseline:pair_likelihood"} <= set(model.calibrators)
    # the best hypothesis has its own calibrator (fitted on the calibration queries' best ones), the rest theirs
    # (one calibrator serves all where the others are all wrong, as the re-ranked ones of this small map are)
    assert "global:others" in model.calibrators
    assert model.calibrators["global"].fitted_on == t["calibration_queries"]
    u = model.uncertainty(vpr_map.descriptors)
    assert u.shape == (40,) and np.isfinite(u).all() and (u > 0).all()
    query_u, map_u, pair = model.describe(vpr_map.descriptors[3], vpr_map.descriptors[[3, 4, 30]])
    assert query_u == pytest.approx(u[3]) and np.allclose(map_u, u[[3, 4, 30]])
    assert pair[0] > pair[2] and pair[1] > pair[2]  # the frame itself and its neighbour above a far frame
    sims = vpr_map.descriptors[3] @ vpr_map.descriptors[[3, 4, 30]].T
    p = model.probabilities(hypothesis_features(sims, query_u, map_u, pair))
    assert ((p >= 0) & (p <= 1)).all() and p[0] > p[2]

    def reranked(inliers, ratio):
        n = len(inliers)
        geometry = geometry_features(inliers, np.full(n, ratio), np.asarray(inliers) / 512, np.full(n, -30.0),
                                     np.full(n, 0.4))
        return model.probabilities(hypothesis_features(sims, query_u, map_u, pair, geometry), "xfeat-mnn")

    p_rr = reranked([200, 150, 0], 0.5)
    assert np.isfinite(p_rr).all()
    # more inliers never lower the probability (the calibrators are monotone in their evidence)
    assert (reranked([400, 300, 50], 0.6) >= p_rr).all()
    for name in ("global", "rerank:xfeat-mnn"):
        c = model.calibrators[name]
        assert c.increasing and all(c.coef[c.features.index(f)] >= 0 for f in c.increasing)
        assert 0 < c.full_precision <= 1
    assert np.isnan(model.probabilities(hypothesis_features(sims, query_u, map_u, pair), "disk-lightglue")).all()


def _saved_with(vpr_map, model, path):
    """Save the map with `model` as its uncertainty model, leaving the shared map without one."""
    vpr_map.uncertainty = model
    try:
        return vpr_map.save(path)
    finally:
        vpr_map.uncertainty = None


def test_model_round_trips_with_the_map_and_damage_is_refused(trained, tmp_path):
    from vpr_ros.core.map.store import MapError, VPRMap

    vpr_map, model = trained
    path = _saved_with(vpr_map, model, tmp_path / "m")
    loaded = VPRMap.load(path)
    assert loaded.uncertainty is not None
    assert np.allclose(loaded.uncertainty.uncertainty(loaded.descriptors), model.uncertainty(vpr_map.descriptors))
    assert json.loads((path / "map.json").read_text())["uncertainty"] is True
    # a modified head file fails its checksum
    broken = shutil.copytree(path, tmp_path / "broken")
    with (broken / "uncertainty.pt").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00" * 16)
    with pytest.raises(MapError, match="checksum"):
        VPRMap.load(broken)
    # a model for other descriptors is refused by name even with valid checksums
    from vpr_ros.core.uncertainty.model import UncertaintyModel

    with pytest.raises(ValueError, match="retrain"):
        UncertaintyModel.load(path, 4096, model.fingerprint)


def test_a_model_of_an_older_format_is_refused_by_name_and_can_be_retrained(trained, tmp_path):
    """A map whose uncertainty model predates this format (intact files, valid checksums) is refused with the
    command that fixes it, and that command works on it."""
    import hashlib

    from vpr_ros.core.map.store import MapError, VPRMap
    from vpr_ros.tools.train_uncertainty import main

    vpr_map, model = trained
    path = _saved_with(vpr_map, model, tmp_path / "old")
    meta_file = path / "uncertainty.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "format_version": 1}))
    record = json.loads((path / "map.json").read_text())
    record["files"]["uncertainty.json"] = {"bytes": meta_file.stat().st_size,
                                           "sha256": hashlib.sha256(meta_file.read_bytes()).hexdigest()}
    (path / "map.json").write_text(json.dumps(record))
    with pytest.raises(MapError, match="format version 1.*retrain it with vpr_train_uncertainty"):
        VPRMap.load(path)
    assert main([str(path), "--epochs", "2", "--views", "1", "--positive-distance", "2", "--quiet"]) == 0
    assert VPRMap.load(path).uncertainty is not None


def test_training_refuses_maps_it_cannot_learn_from(small_map):
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.core.build.uncertainty_training import train_uncertainty

    tiny = VPRMap.create("tiny", small_map.descriptor, small_map.descriptors[:6], small_map.frames.select(np.arange(6)))
    with pytest.raises(ValueError, match="at least 10"):
        train_uncertainty(tiny, FAST)
    same = VPRMap.create("same", small_map.descriptor, np.repeat(small_map.descriptors[:1], 20, axis=0),
                         small_map.frames.select(np.arange(20)))
    with pytest.raises(ValueError, match="identical"):
        train_uncertainty(same, FAST)
    far = small_map.frames.select(np.arange(20))
    far.pose[:, 0] = np.arange(20) * 100.0  # no two frames within 2 m: no positive pairs
    lonely = VPRMap.create("lonely", small_map.descriptor, small_map.descriptors[:20], far)
    with pytest.raises(ValueError, match="positive pairs"):
        train_uncertainty(lonely, FAST)


def test_without_images_it_calibrates_on_stored_descriptors_and_says_so(small_map):
    from vpr_ros.core.build.uncertainty_training import train_uncertainty

    model = train_uncertainty(small_map, {**FAST, "positive_distance_m": 3.0}, load=False)
    assert model.training["calibration_views"] == "stored descriptors"
    assert model.training["calibration_queries"] == 12


def test_localizer_publishes_probabilities_and_accepts_by_them(trained, corridor_dir):
    from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.pipeline.localizer import Localizer

    vpr_map, model = trained
    vpr_map.uncertainty = model
    try:
        query = read_image(sorted((corridor_dir / "query").glob("*.jpg"))[20])
        eager = Localizer(LocalizerConfig(rerank="off", temporal_window=0, accept_min_probability=0.0,
                                          accept_min_similarity=1.0), vpr_map)
        result = eager.process(query, 1)
        assert np.isfinite(result.query_uncertainty) and "uncertainty" in result.timings_ms
        probs = [p.probability for p in result.places]
        assert all(0 <= p <= 1 for p in probs) and all(np.isfinite(p.map_uncertainty) for p in result.places)
        assert all(np.isfinite(p.pair_likelihood) for p in result.places)
        assert result.loop is result.places[0]  # accepted by probability although the similarity gate says no
        # < 0: the risk-controlled threshold; 24 calibration queries cannot certify a 1 % false-closure rate
        # (1/25 > 0.01), so nothing short of certainty is accepted; they can certify 20 %
        auto = Localizer(LocalizerConfig(rerank="off", temporal_window=0, accept_min_probability=-1.0),
                         vpr_map).process(query, 1)
        assert auto.accept_min_probability == 1.0 and auto.loop is None
        loose = Localizer(LocalizerConfig(rerank="off", temporal_window=0, accept_min_probability=-1.0,
                                          accept_max_false_rate=0.2), vpr_map).process(query, 1)
        assert loose.accept_min_probability == max(AUTO_MIN_PROBABILITY, model.calibrators["global"].risk_threshold(0.2))
        assert loose.accept_min_probability < 1.0
        assert (loose.loop is not None) == (loose.places[0].probability >= loose.accept_min_probability)
        strict = Localizer(LocalizerConfig(rerank="off", temporal_window=0, accept_min_probability=1.0,
                                           accept_min_similarity=-1.0), vpr_map)
        assert strict.process(query, 1).loop is None
        reranked = Localizer(LocalizerConfig(rerank="xfeat-mnn"), vpr_map).process(query, 1)
        assert all(np.isfinite(p.probability) for p in reranked.places)
        unknown = Localizer(LocalizerConfig(rerank="xfeat-lighterglue", top_k=2), vpr_map).process(query, 1)
        assert all(np.isnan(p.probability) for p in unknown.places)  # no calibrator for that matcher
    finally:
        vpr_map.uncertainty = None


def test_train_uncertainty_console_script(small_map, tmp_path):
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.tools.train_uncertainty import main

    path = small_map.save(tmp_path / "m")
    assert main([str(path), "--epochs", "3", "--views", "1", "--positive-distance", "2", "--quiet"]) == 0
    assert VPRMap.load(path).uncertainty.training["epochs"] == 3
    assert main([str(tmp_path / "missing"), "--quiet"]) == 2


def test_confident_global_first_candidate_is_verified_alone(trained, corridor_dir):
    """skip_min_probability: when the calibrated probability of the global first candidate reaches it,
    only that pair is matched (and all of them again if it fails verification); off, all are matched."""
    from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.pipeline.localizer import Localizer

    vpr_map, model = trained
    queries = [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:30:6]]
    vpr_map.uncertainty = model
    try:
        pairs = {}
        for gate in (None, 0.0, 1.0):
            localizer = Localizer(LocalizerConfig(rerank="xfeat-mnn", top_k=4, skip_min_probability=gate), vpr_map)
            results = [localizer.process(q, 10**9 * (i + 1)) for i, q in enumerate(queries)]
            pairs[gate] = [(r.rerank_pairs, r.rerank_skipped, r.places[0].verified) for r in results]
        assert all((p, s) == (4, False) for p, s, _ in pairs[None]), pairs
        assert pairs[1.0] == pairs[None]  # a probability of 1 is never reached
        # probability >= 0: the first alone, unless it failed verification (then all four)
        assert all((p, s) == ((1, True) if v else (4, False)) for p, s, v in pairs[0.0])
        assert any(s for _, s, _ in pairs[0.0])
    finally:
        vpr_map.uncertainty = None


@pytest.mark.slow
def test_sequence_ranking_is_calibrated_on_another_session(trained, corridor_dir, caplog):
    """The Corridor queries, a second traversal with poses, replayed against the map with sequence matching:
    the sequence calibrator learns that a higher sequence score means the right place, and a node running
    that window uses it; another window length falls back to the single-image calibrator and says so."""
    import copy
    import logging

    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.evaluation.replay import replay_core
    from vpr_ros.core.evaluation.scoring import by_distance
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.build.uncertainty_training import fit_session_calibrators

    vpr_map, trained_model = trained
    model = copy.deepcopy(trained_model)
    paths = sorted((corridor_dir / "query").glob("*.jpg"))[:40]
    poses = np.zeros((40, 7))
    poses[:, 0], poses[:, 6] = np.arange(40), 1.0  # query i was taken beside reference i
    items = [(i * 10**9, poses[i], (lambda path=path: read_image(path))) for i, path in enumerate(paths)]
    config = LocalizerConfig(rerank="off", top_k=10, temporal_window=0, sequence_length=5, sequence_max_step=2,
                             sequence_similarity="plain")
    vpr_map.uncertainty = model
    try:
        records = replay_core(vpr_map, items, config)
        fitted = fit_session_calibrators(model, {None: records}, by_distance(vpr_map.frames, poses, 2.0), 5, "plain",
                                         session="corridor queries")
        calibrator = model.calibrators["sequence:global"]
        assert calibrator.features[-1] == "sequence_score" and fitted["length"] == 5
        assert 0 < fitted["calibrators"]["sequence:global"]["right"] < fitted["calibrators"]["sequence:global"]["hypotheses"]
        assert calibrator.coef[-1] > 0  # a higher sequence score: more likely the place
        assert model.sequence_calibrator(None, 5, "plain") is calibrator
        assert model.sequence_calibrator(None, 5, "centred") is None and model.sequence_calibrator(None, 6, "plain") is None
        localizer = Localizer(config, vpr_map)
        results = [localizer.process(load(), stamp) for stamp, _, load in items[:12]]
        for r in results[4:]:  # ranked by sequence: the session's calibrator, with the sequence score
            sims = np.array([p.hypothesis.similarity for p in r.places])
            map_u = np.array([p.map_uncertainty for p in r.places])
            pair = np.array([p.pair_likelihood for p in r.places])
            scores = np.array([p.sequence_score for p in r.places])
            got = np.array([p.probability for p in r.places])
            assert np.allclose(got, model.probabilities(
                hypothesis_features(sims, r.query_uncertainty, map_u, pair, None, scores), None, calibrator))
            assert not np.allclose(got, model.probabilities(hypothesis_features(sims, r.query_uncertainty, map_u, pair)))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vpr_ros"):
            other = Localizer(dataclasses.replace(config, sequence_length=6), vpr_map)
            last = [other.process(load(), stamp) for stamp, _, load in items[:8]][-1]
        assert last.sequence_length == 6 and all(np.isfinite(p.probability) for p in last.places)
        assert sum("no calibrator for sequence ranking" in m for m in caplog.messages) == 1
    finally:
        vpr_map.uncertainty = None


@pytest.mark.slow
@pytest.mark.parametrize("rerank, bound", [(None, 0.06), ("xfeat-mnn", 0.15)])
def test_probabilities_are_calibrated_on_the_other_traversal(corridor_dir, rerank, bound):
    """The published probability, trained on the Corridor references (synthetic views of the map's own
    images), is measured for calibration where the calibrators never looked: Corridor's other traversal.
    Its expected calibration error stays under `bound` (measured at be683cd: 0.032 with global retrieval,
    0.111 re-ranked with xfeat-mnn; issue 41 is to bring the latter down). With global retrieval the
    probability also ranks correct top-1 answers above wrong ones better than a constant would (AUC-PR 0.917
    against the 0.883 share of correct answers); re-ranked it does not (0.955 against 0.964: issue 41), which
    is left unasserted here rather than hidden behind a loose bound."""
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.evaluation.dataset_eval import evaluate_dataset

    report = evaluate_dataset(corridor_dir, "default", LocalizerConfig(rerank=rerank), progress=False, uncertainty={})
    confidence = report["confidence"]
    combined = confidence["methods"]["combined"]
    assert confidence["queries"] == 111 and 0.8 <= confidence["top1_accuracy"] < 1.0, confidence["top1_accuracy"]
    assert combined["ece"] <= bound, combined
    if rerank is None:
        assert combined["auc_pr"] > confidence["top1_accuracy"] + 0.01, combined
