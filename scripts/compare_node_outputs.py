"""Does a change alter what the node publishes? Replay one bag through `vpr_localizer` as it is at two
commits and compare its PlaceHypotheses, LoopClosure and vpr/pose messages frame by frame (stage timings
aside).

Each commit is checked out into a temporary git worktree; its node runs from there (PYTHONPATH) in its
own process on a private ROS domain, with the same parameters (the shipped defaults with the demo's
re-ranking, vpr_demo step 6), map and bag. The images are played in lockstep (the next one after the node
answered the previous), so every frame is processed at both, and each frame's depth image DEPTH_FIRST_S
before it, so that every frame pairs with its own at both (a depth image the node receives only after the
frame was matched leaves its loop closure on the map's depth: that varies from run to run).
The player and this comparison run from the current checkout. Exit code 0: identical; 1: they differ
(the first differences are printed).

    .venv/bin/python scripts/compare_node_outputs.py --before 0e6f8a9 --after HEAD \
        --map demo_run/map --bag demo_run/run/lap_3
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import to_rgb8

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"image": "/camera/image_raw", "pose": "/ground_truth", "info": "/camera/camera_info",
          "depth": "/camera/depth/image_raw"}
# the demo's node (tools/demo.py step 6): re-ranking with LighterGlue on the first 5 of 10 candidates
# each frame's depth image is published this long before the frame, so that both runs pair every frame with its
# own: a depth message that reaches the node after the frame was matched leaves the loop closure on the map's
# depth alone, which varies run to run (docs/benchmarks.md)
DEPTH_FIRST_S = 0.3
DEMO_NODE = {"top_k": 10, "temporal_window": 0, "rerank": "xfeat-lighterglue", "rerank_top_k": 5}


def as_plain(msg):
    """A ROS message as nested dicts and lists (floats kept exactly; NaN as the string "nan")."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: as_plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple, np.ndarray)) or type(msg).__name__ == "array":
        return [as_plain(v) for v in msg]
    if isinstance(msg, float):
        return "nan" if math.isnan(msg) else msg
    return msg


def record(tree: Path, map_dir: Path, bag: Path, out: Path, depth_first_s: float = DEPTH_FIRST_S) -> None:
    """Replay `bag` through the node of checkout `tree`; write {stamp: {hypotheses, loop, pose}} to `out`."""
    from vpr_ros.core.build.bag_source import BagDepth, read_camera_info
    from vpr_ros.ros import replay
    from vpr_ros.ros.interfaces import load_interfaces
    from vpr_ros.tools.eval import replay_inputs

    items, _ = replay_inputs(bag, TOPICS["image"], TOPICS["pose"], None)
    K, _, _ = read_camera_info(bag, TOPICS["info"])
    depth = BagDepth(bag, TOPICS["depth"])
    config = LocalizerConfig(**DEMO_NODE)
    msgs = load_interfaces(None)
    domain = 150 + (abs(hash(str(tree))) % 80)
    node = replay._NodeProcess(map_dir, config, True, domain, with_depth=True, extra_env={"PYTHONPATH": str(tree)})
    player = replay._Player(msgs, domain)
    try:
        node.wait_until_up(player, 180.0)
        for stamp_ns, _, load in items:
            image, info = replay._image_messages(to_rgb8(load()), stamp_ns, K)
            player.info_pub.publish(info)
            frame_depth = depth(stamp_ns)
            if frame_depth is not None:
                player.depth_pub.publish(replay._depth_message(frame_depth, stamp_ns))
                time.sleep(depth_first_s)
            player.sent[stamp_ns] = time.perf_counter()
            player.image_pub.publish(image)
            player.wait_for_answer(stamp_ns, node, 60.0)
            if stamp_ns not in player.answers:
                raise node.fail(f"did not answer the frame of stamp {stamp_ns} ({'alive' if node.alive() else 'exited'})")
        player.wait_for_quiet(len(items), 10.0)
    finally:
        player.close()
        node.stop()
    answers = {}
    for stamp in sorted(player.answers):
        hypotheses = as_plain(player.answers[stamp][0])
        hypotheses.pop("timing")  # stage timings differ run to run
        answers[str(stamp)] = {"hypotheses": hypotheses,
                               "loop": as_plain(player.loops[stamp]) if stamp in player.loops else None,
                               "pose": as_plain(player.poses[stamp]) if stamp in player.poses else None}
    out.write_text(json.dumps({"tree": str(tree), "frames": len(items), "answers": answers}))
    print(f"\n{len(answers)} of {len(items)} frames answered, {sum(a['loop'] is not None for a in answers.values())} "
          f"loop closures, {sum(a['pose'] is not None for a in answers.values())} poses")


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{path}/{k}: only in {'before' if k in a else 'after'}" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b)):
            found += differences(a[k], b[k], f"{path}/{k}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision (required)")
    parser.add_argument("--after", default="", help="git revision (default: the working tree)")
    parser.add_argument("--map", type=Path, default=ROOT / "demo_run" / "map")
    parser.add_argument("--bag", type=Path, default=ROOT / "demo_run" / "run" / "lap_3")
    parser.add_argument("--depth-first-s", type=float, default=DEPTH_FIRST_S,
                        help="publish each frame's depth image this long before the frame (0: just before, as "
                             "vpr_eval --through-node does)")
    parser.add_argument("--record", type=Path, help="only record the node of --tree (default: this checkout) into "
                                                    "this JSON file")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # with --record: the checkout whose node runs
    args = parser.parse_args(argv)
    if args.record:
        record(args.tree or ROOT, args.map.resolve(), args.bag.resolve(), args.record, args.depth_first_s)
        return 0
    if not args.before:
        parser.error("--before is required")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="vpr_compare_") as tmp:
        for label, rev in (("before", args.before), ("after", args.after)):
            tree = ROOT
            if rev:
                tree = Path(tmp) / label
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                               capture_output=True)
            try:
                print(f"== {label}: {rev or 'working tree'} ({tree})", flush=True)
                out = Path(tmp) / f"{label}.json"
                subprocess.run([sys.executable, __file__, "--record", str(out), "--tree", str(tree),
                                "--map", str(args.map), "--bag", str(args.bag),
                                "--depth-first-s", str(args.depth_first_s)], check=True)
                runs[label] = json.loads(out.read_text())
            finally:
                if rev:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    before, after = runs["before"]["answers"], runs["after"]["answers"]
    found = differences(before, after)
    loops = sum(a["loop"] is not None for a in before.values())
    poses = sum(a["pose"] is not None for a in before.values())
    print(f"{len(before)} and {len(after)} frames answered of {runs['before']['frames']}; before: {loops} loop "
          f"closures, {poses} poses; {len(found)} differing fields")
    for line in found[:30]:
        print("  " + line)
    return 0 if not found and len(before) == runs["before"]["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
