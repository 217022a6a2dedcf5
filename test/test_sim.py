"""The simulator: route and world geometry, deterministic rendering, laps that differ, vpr_sim bags."""

import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from vpr_ros.core.build.bag_source import read_bag_frames, read_camera_info, read_pose_child_frame
from vpr_ros.sim.render import Camera, rotation
from vpr_ros.sim.run import SimRun
from vpr_ros.sim.world import Route, StreetWorld
from vpr_ros.tools import sim

SMALL = {"frames": 12, "width": 160, "height": 120, "seed": 3}


def _rotation_of(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_route_is_a_closed_loop_of_the_asked_length():
    route = Route.rounded_rectangle(300.0, 1.5, 12.0, 10.0)
    assert route.length == pytest.approx(300.0, rel=0.01)
    start, end = route.at([0.0, route.length - 1e-9])[0]
    assert np.linalg.norm(start - end) < 0.01
    xy, heading = route.at(np.arange(0, route.length, 0.5))
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    assert np.allclose(steps, 0.5, atol=0.01)  # arc-length parameterised
    assert heading[-1] - heading[0] == pytest.approx(2 * np.pi, abs=0.1)  # one turn, counter-clockwise
    left = route.offset([10.0], [6.0])[0]
    assert np.linalg.norm(left - route.at([10.0])[0][0]) == pytest.approx(6.0)


def test_a_short_run_gets_the_smallest_loop():
    route = Route.rounded_rectangle(20.0, 1.0, 12.0, 10.0)
    assert route.length > 20.0


def test_world_is_deterministic_per_seed():
    a, b, c = StreetWorld(5, 200.0), StreetWorld(5, 200.0), StreetWorld(6, 200.0)
    assert np.array_equal(a.walls.a, b.walls.a) and [t.seed for t in a.textures] == [t.seed for t in b.textures]
    assert not (a.walls.a.shape == c.walls.a.shape and np.array_equal(a.walls.a, c.walls.a))
    assert len({t.seed for t in a.textures if t.kind == "facade"}) < sum(t.kind == "facade" for t in a.textures), \
        "some designs repeat (perceptual aliasing)"
    cars1, cars2 = a.cars(0)[0], a.cars(1)[0]
    assert len(cars1.a) and not (cars1.a.shape == cars2.a.shape and np.allclose(cars1.a, cars2.a))
    assert np.allclose(np.linalg.norm(a.walls.normal, axis=1), 1.0)


def test_frames_are_deterministic_and_laps_differ():
    run1, run2 = SimRun(SMALL), SimRun(SMALL)
    lap0 = list(run1.frames(0))
    again = list(run2.frames(0))
    assert all(np.array_equal(f.image, g.image) and np.array_equal(f.pose, g.pose) for f, g in zip(lap0, again))
    lap1 = list(run1.frames(1))
    assert lap0[0].image.shape == (120, 160, 3) and lap0[0].image.dtype == np.uint8
    consecutive = np.mean([np.abs(a.image.astype(float) - b.image).mean() for a, b in zip(lap0, lap0[1:])])
    across = np.mean([np.abs(a.image.astype(float) - b.image).mean() for a, b in zip(lap0, lap1)])
    assert across > 2 * consecutive, (across, consecutive)
    offsets = [np.linalg.norm(a.pose[:2] - b.pose[:2]) for a, b in zip(lap0, lap1)]
    assert 0.0 < max(offsets) <= 2.5 + 0.6  # lateral wander plus half a spacing along the route
    assert [f.stamp_ns for f in lap1][0] > lap0[-1].stamp_ns


def test_ground_truth_orientation_is_the_rendered_rotation():
    run = SimRun({**SMALL, "frames": 4})
    for frame in run.frames(1):
        roll, pitch, yaw = frame.rpy
        assert np.allclose(_rotation_of(frame.pose[3:]), rotation(yaw, pitch, roll), atol=1e-9)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="image size"):
        Camera(8, 8)
    with pytest.raises(ValueError, match="unknown simulation options"):
        SimRun({"frame": 3})
    with pytest.raises(ValueError, match="frames >= 1"):
        SimRun({"frames": 0})
    with pytest.raises(ValueError, match="unknown appearances"):
        SimRun({"appearances": ("day", "moonlight")})
    run = SimRun(SMALL)
    with pytest.raises(ValueError, match="finite"):
        run.renderer.render((np.nan, 0, 1.6, 0, 0, 0), run.appearance(0))
    with pytest.raises(ValueError, match="lap 5"):
        next(run.frames(5))


def _messages(bag, topic):
    with AnyReader([bag], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [bytes(raw) for _, _, raw in reader.messages(connections=conns)]


def test_vpr_sim_writes_replayable_deterministic_bags(tmp_path, capsys):
    args = ["--frames", "10", "--width", "160", "--height", "120", "--seed", "4", "--quiet"]
    assert sim.main([str(tmp_path / "a"), *args]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert [lap["frames"] for lap in run["laps"]] == [10, 10] and run["complete"]
    assert run["laps"][1]["difference_to_lap_1"] > run["laps"][0]["consecutive_frame_difference"]
    frames = read_bag_frames(tmp_path / "a" / "lap_1", "/camera/image_raw", "/ground_truth").frames
    assert len(frames) == 10 and frames.has_pose.all()
    stamps, poses, _ = SimRun({"frames": 10, "width": 160, "height": 120, "seed": 4}).trajectory(0)
    assert np.array_equal(frames.stamp_ns, stamps) and np.allclose(frames.pose[:, :2], poses[:, :2])
    K = read_camera_info(tmp_path / "a" / "lap_2", "/camera/camera_info")[0]
    assert np.allclose(K, Camera(160, 120).K)
    tf = read_bag_frames(tmp_path / "a" / "lap_2", "/camera/image_raw", tf_frames=("map", "base_link_truth")).frames
    assert tf.has_pose.all()
    # the same options give the same messages; a complete run is kept
    assert sim.main([str(tmp_path / "b"), *args]) == 0
    for lap in ("lap_1", "lap_2"):
        assert _messages(tmp_path / "a" / lap, "/camera/image_raw") == _messages(tmp_path / "b" / lap, "/camera/image_raw")
    mtime = (tmp_path / "a" / "lap_1").stat().st_mtime
    capsys.readouterr()
    assert sim.main([str(tmp_path / "a"), *args[:-1]]) == 0
    assert "already holds this run" in capsys.readouterr().out
    assert (tmp_path / "a" / "lap_1").stat().st_mtime == mtime


def test_vpr_sim_compressed_images(tmp_path):
    assert sim.main([str(tmp_path), "--frames", "3", "--laps", "1", "--width", "160", "--height", "120",
                     "--image-format", "jpeg", "--quiet"]) == 0
    frames = read_bag_frames(tmp_path / "lap_1", "/camera/image_raw/compressed", "/ground_truth")
    image = frames.loader()(frames.frames.sources[0])
    assert image.shape == (120, 160, 3)


def test_vpr_sim_refuses_bad_options(tmp_path, capsys):
    assert sim.main([str(tmp_path), "--frames", "0"]) == 2
    assert "frames >= 1" in capsys.readouterr().err


def test_hard_conditions_and_another_robots_camera():
    """night, rain, fog and snow laps render deterministically and differ from day the way they should;
    camera_offsets move a lap's camera as if another robot drove it."""
    conf = {"frames": 12, "laps": 5, "width": 160, "height": 120, "appearances": ("day", "night", "rain", "fog", "snow"),
            "camera_offsets": ((0.0, 0.0, 0.0), (-0.7, 0.5, 6.0))}
    run = SimRun(conf)
    images = {run.appearance(lap).name: next(iter(run.frames(lap))).image.astype(np.float32) for lap in range(5)}
    again = next(iter(SimRun(conf).frames(1))).image
    assert (again == images["night"]).all()
    day = images["day"]
    assert images["night"].mean() < 0.6 * day.mean()
    ground = slice(90, 120)  # the lower quarter: road
    assert images["snow"][ground].mean() > day[ground].mean() + 40
    for name in ("night", "rain", "fog", "snow"):
        assert np.abs(images[name] - day).mean() > 10, name
    _, day_pose, _ = run.trajectory(0)
    _, other_pose, _ = run.trajectory(1)
    assert other_pose[:, 2].mean() == pytest.approx(day_pose[:, 2].mean() - 0.7, abs=0.1)
    assert run.describe()["laps"][1]["camera_offset"] == {"height_m": -0.7, "lateral_m": 0.5, "pitch_deg": 6.0}
    with pytest.raises(ValueError, match="camera_offsets"):
        SimRun({"camera_offsets": ((-1.6, 0.0, 0.0),)})


def test_odometry_drifts_by_seed_and_the_truth_is_beside_it(tmp_path):
    # the default drift is of the order of 1-2 % of the distance travelled, the same for a seed, other for another
    summaries = [SimRun({"seed": seed, "frames": 160, "laps": 3}).drift_summary() for seed in range(3)]
    assert all(0.5 < s["max_error_percent"] < 3.0 for s in summaries), summaries
    assert SimRun({"seed": 1, "frames": 160, "laps": 3}).drift_summary() == summaries[1]
    assert len({s["final_error_m"] for s in summaries}) == 3
    assert SimRun({"frames": 50, "odometry_drift": 0}).drift_summary()["max_error_m"] < 1e-9
    with pytest.raises(ValueError, match="drift"):
        SimRun({"odometry_drift": {"scale": -1}})
    # the bag: /odom is the odometry (odom -> base_link, its covariance growing), /ground_truth the truth (map)
    assert sim.main([str(tmp_path), "--frames", "20", "--laps", "2", "--width", "96", "--height", "72", "--no-depth",
                     "--odom-drift", "5", "--quiet"]) == 0
    run = SimRun({"frames": 20, "laps": 2, "width": 96, "height": 72, "depth": False, "odometry_drift": 5.0})
    odometry, covariance = run.odometry()
    truth = read_bag_frames(tmp_path / "lap_2", "/camera/image_raw", "/ground_truth").frames
    odom = read_bag_frames(tmp_path / "lap_2", "/camera/image_raw", "/odom").frames
    assert np.allclose(truth.pose[:, :2], run.trajectory(1)[1][:, :2])
    assert np.allclose(odom.pose[:, :2], odometry[1][:, :2]) and not np.allclose(odom.pose[:, :2], truth.pose[:, :2])
    assert read_pose_child_frame(tmp_path / "lap_2", "/ground_truth") == "base_link"
    with AnyReader([tmp_path / "lap_2"], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conns = [c for c in reader.connections if c.topic == "/odom"]
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert {m.header.frame_id for m in msgs} == {"odom"}
    variances = [m.pose.covariance[0] for m in msgs]
    assert variances[0] > 0 and np.all(np.diff(variances) > 0) and np.allclose(variances, covariance[1][:, 0, 0])
    odom_tf = read_bag_frames(tmp_path / "lap_2", "/camera/image_raw", tf_frames=("odom", "base_link")).frames
    assert np.allclose(odom_tf.pose[:, :2], odom.pose[:, :2])
