"""`vpr_build_map`: build a vpr_ros map directory from an image folder or a rosbag.

    vpr_build_map maps/office --images run1/ --poses run1/poses.csv
    vpr_build_map maps/lap1 --bag lap1.mcap --image-topic /camera/image_raw --pose-topic /ground_truth
    vpr_build_map maps/lap1 --bag lap1 --image-topic /camera/image_raw --pose-topic /ground_truth \
        --camera-info-topic /camera/camera_info --depth-topic /camera/depth/image_raw
    vpr_build_map maps/lap2 --descriptor-from maps/lap1 --bag lap2 ...    (lap 1's descriptor space)
    vpr_build_map --append maps/site --bag day2 --session day2 --robot r2 ...   (a session more in maps/site)
    vpr_build_map maps/city --images city/ --poses city/positions.csv --index ivfpq-1m --local-features none \
        --ray auto                              (a city-scale map: described on Ray workers, docs/city_scale.md)
    vpr_build_map maps/fleet --bag run1 --bag run2 --bag run3 --image-topic /camera/image_raw ...
                                                (many bags, one session each, in one descriptor space)

An interrupted build resumes when run again with the same arguments: its finished shards wait in the
work folder (--work-dir, default .<output>.build beside the output), removed once the map is saved.

XFeat local features are stored by default (the node's shipped re-ranking needs them);
`--local-features none` builds a global-only map.
"""

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from vpr_ros.core.descriptors.presets import PRESETS
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.build.map_builder import KeyframePolicy, build_map
from vpr_ros.core.build.sources import SourceLoader, frames_from_folder, load_image_file
from vpr_ros.core.build.shards import FIT_SAMPLE, SHARD_FRAMES
from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.build.sessions import check_can_grow, merge_maps
from vpr_ros.core.matching.local_features import EXTRACTORS
from vpr_ros.tools import add_bag_topic_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_build_map", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("output", type=Path, nargs="?",
                        help="map directory to write (with --append: default the appended map, replaced atomically)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of images, subfolders included (sorted by path)")
    source.add_argument("--bag", type=Path, action="append",
                        help="rosbag2 directory (mcap or sqlite3) or rosbag1 file; repeat for many bags (one session "
                             "each, named after the bag; the camera is read from the first)")
    parser.add_argument("--poses", type=Path,
                        help="with --images: CSV of image, stamp, position (x y z [qx qy qz qw], or UTM easting "
                             "northing) and/or GPS (latitude longitude [altitude])")
    add_bag_topic_arguments(parser)
    parser.add_argument("--gps-topic", help="with --bag: sensor_msgs/NavSatFix topic")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), metavar="PRESET",
                        help=f"descriptor preset, one of {', '.join(sorted(PRESETS))}")
    parser.add_argument("--checkpoint", type=Path,
                        help="weights file of a published-model preset (cosplace-*, salad-*, ...); the map records "
                             "its path and checks the weights by fingerprint when loaded")
    parser.add_argument("--index", help="faiss index_factory string (default: the preset's)")
    parser.add_argument("--local-features", choices=[*sorted(EXTRACTORS), "none"], default="xfeat",
                        help="also store each keyframe's local features for re-ranking (default xfeat: what the "
                             "node's shipped re-ranking, xfeat-mnn, and the LighterGlue matcher need; none: a "
                             "global-only map, for rerank: off)")
    parser.add_argument("--input-size", default="auto", type=_input_size, metavar="WxH|auto",
                        help="network input (width x height, multiples of 32); auto: the preset's pixel count at "
                             "the camera's aspect ratio, so that nothing is stretched (default: auto)")
    parser.add_argument("--camera-info-topic",
                        help="with --bag: sensor_msgs/CameraInfo topic; the map keeps the intrinsics, the optical frame "
                             "and (from /tf_static) where the camera sits on the posed body")
    parser.add_argument("--depth-topic", help="with --bag: depth image aligned to the colour image (16UC1 millimetres "
                                              "or 32FC1 metres); each keypoint keeps its depth for metric loop "
                                              "closures (needs --camera-info-topic and local features)")
    parser.add_argument("--max-depth-gap", type=float, default=0.05,
                        help="seconds between an image and the depth image used for it (default 0.05)")
    parser.add_argument("--camera-in-body", type=_pose7, metavar="X,Y,Z,QX,QY,QZ,QW",
                        help="the optical frame's pose in the posed body frame, when /tf_static does not give it")
    parser.add_argument("--max-keypoints", type=int, default=512, help="with --local-features: keypoints per frame")
    parser.add_argument("--min-distance", type=float, default=0.0, help="keyframe every N metres (0: off)")
    parser.add_argument("--min-interval", type=float, default=0.0, help="keyframe every N seconds (0: off)")
    parser.add_argument("--max-similarity", type=float, default=1.0,
                        help="drop frames more similar than this to the last keyframe (1: off)")
    parser.add_argument("--descriptor-from", type=Path, metavar="MAP",
                        help="describe the frames in MAP's descriptor space (its vocabulary, PCA, input size and local "
                             "features), so that the maps can be merged (vpr_merge_maps); --preset/--input-size/"
                             "--local-features/--max-keypoints/--index come from MAP")
    parser.add_argument("--append", type=Path, metavar="MAP",
                        help="add these frames to MAP as a new session (in MAP's descriptor space), written to OUTPUT "
                             "or, without one, over MAP (atomically)")
    parser.add_argument("--session", help="session id of these frames (default: the bag's or folder's name)")
    parser.add_argument("--robot", default="", help="id of the robot that recorded them (default: unknown)")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="describe the frames on Ray workers: auto starts a local Ray runtime on this machine, "
                             "ADDRESS joins a cluster (ray://head:10001); the work folder must be on storage every "
                             "worker mounts (default: this process describes them)")
    parser.add_argument("--ray-workers", type=int, help="with --ray: actors in the pool (default: one per GPU, "
                                                       "or per CPU without GPUs)")
    parser.add_argument("--work-dir", type=Path,
                        help="where the build keeps its fitted descriptor and finished shards, to resume an interrupted "
                             "build (default: .<output>.build beside the output; removed after a successful build)")
    parser.add_argument("--fit-sample", type=int, default=FIT_SAMPLE,
                        help=f"frames the vocabulary and PCA are fitted on, spread over the map (default {FIT_SAMPLE})")
    parser.add_argument("--shard-frames", type=int, default=SHARD_FRAMES,
                        help=f"frames per shard: the unit of work and of resuming (default {SHARD_FRAMES})")
    parser.add_argument("--name", help="map name (default: the output folder's name)")
    parser.add_argument("--frame-id", default=None, help="coordinate frame of the poses (default: map)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing map directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")

    if args.append and args.descriptor_from:
        parser.error("--append already works in the appended map's descriptor space; drop --descriptor-from")
    if args.output is None and not args.append:
        parser.error("the output map directory is required (except with --append)")
    if args.output is None:
        args.output = args.append
    replaces_appended = args.append is not None and args.output.absolute() == args.append.absolute()
    if args.output.exists() and not args.overwrite and not replaces_appended:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    if args.bag and not args.image_topic:
        parser.error("--bag needs --image-topic")
    if args.images and (args.image_topic or args.pose_topic or args.tf_frames or args.gps_topic
                        or args.camera_info_topic or args.depth_topic):
        parser.error("--image-topic/--pose-topic/--tf-frames/--gps-topic/--camera-info-topic/--depth-topic apply to "
                     "--bag only")
    if args.depth_topic and not args.camera_info_topic:
        parser.error("--depth-topic needs --camera-info-topic (3-D points need the camera's intrinsics)")
    if args.depth_topic and args.local_features == "none":
        parser.error("--depth-topic stores the depth of local features: it needs --local-features")
    if args.bag and args.poses:
        parser.error("--poses applies to --images only")
    if args.bag and len(args.bag) > 1 and (args.session or args.depth_topic):
        parser.error("with many bags each is its own session, named after it (no --session), and --depth-topic "
                     "takes one bag")
    if args.ray_workers is not None and (not args.ray or args.ray_workers < 1):
        parser.error("--ray-workers needs --ray and at least 1")
    if args.fit_sample < 1 or args.shard_frames < 1:
        parser.error("--fit-sample and --shard-frames must be positive")
    work_dir = args.work_dir or args.output.parent / f".{args.output.name}.build"
    try:
        policy = KeyframePolicy(args.min_distance, args.min_interval, args.max_similarity)
        camera, depth = None, None
        if args.images:
            frames, load = frames_from_folder(args.images, args.poses), load_image_file
            frame_id = args.frame_id or "map"
        else:
            from vpr_ros.core.build.bag_source import read_bag_frames

            bags = args.bag
            if len({path.name for path in bags}) < len(bags):
                raise ValueError("the bags name their sessions: give bags of different names")
            frames, load = FrameTable(sessions=[]), SourceLoader()
            for path in bags:
                bag = read_bag_frames(path, args.image_topic, args.pose_topic,
                                      tuple(args.tf_frames) if args.tf_frames else None, args.gps_topic)
                if len(bags) > 1:
                    bag.frames.name_session(Session(path.name, args.robot))
                frames.extend(bag.frames)
            if len(bags) == 1:
                load = bag.loader()
            frame_id = args.frame_id or (args.tf_frames[0] if args.tf_frames else "map")
            camera = _camera(args, bags[0]) if args.camera_info_topic else None
            if args.depth_topic:
                from vpr_ros.core.build.bag_source import BagDepth

                depth = BagDepth(bags[0], args.depth_topic, args.max_depth_gap)
        overrides = {"index": args.index} if args.index else {}
        if args.checkpoint:
            overrides["checkpoint"] = str(args.checkpoint)
        base = args.append or args.descriptor_from
        space = VPRMap.load(base, checkpoint=args.checkpoint, with_uncertainty=False) if base else None
        if args.append:  # before describing anything: the session could never join it
            check_can_grow(space, str(args.append))
        if space is not None and (overrides.get("index") or args.preset != "default"):
            raise ValueError(f"--preset and --index come from {base} (the descriptor space's map)")
        session = Session(args.session or (args.images.name if args.images else args.bag[0].name), args.robot)
        name = args.name or (space.name if args.append else args.output.name)
        vpr_map = build_map(name, frames, load, args.preset, policy, frame_id, progress=not args.quiet,
                            local_features=None if args.local_features == "none" else args.local_features,
                            max_keypoints=args.max_keypoints, input_size=args.input_size, camera=camera,
                            depth=depth, session=session, space=space, work_dir=work_dir, ray=args.ray,
                            ray_workers=args.ray_workers, shard_frames=args.shard_frames,
                            fit_sample_size=args.fit_sample, **overrides)
        if args.append:
            vpr_map = merge_maps([space, vpr_map], name, [str(args.append), f"the new session {session}"])
        path = vpr_map.save(args.output, overwrite=args.overwrite or replaces_appended)
    except (FileNotFoundError, ValueError, MapError, RuntimeError) as exc:
        print(f"vpr_build_map: error: {exc}", file=sys.stderr)
        if any(work_dir.glob("shard_*.npz")):
            print(f"vpr_build_map: the finished shards wait in {work_dir}: run the same command again to resume",
                  file=sys.stderr)
        return 2
    shutil.rmtree(work_dir, ignore_errors=True)
    local = f", {vpr_map.local_conf['extractor']} local features" if vpr_map.local_conf else ""
    if vpr_map.local is not None and vpr_map.local.depth is not None:
        local += " with depth"
    sessions = f" in {len(vpr_map.frames.sessions)} sessions" if len(vpr_map.frames.sessions) > 1 else ""
    print(f"map {vpr_map.name}: {len(vpr_map)} frames{sessions}, {vpr_map.descriptor.dim}-d "
          f"{vpr_map.descriptor.preset} descriptors{local}, {int(vpr_map.frames.has_pose.sum())} with poses "
          f"-> {path}")
    return 0


def _camera(args, bag: Path):
    """The map camera from the bag's CameraInfo, mounted by --camera-in-body or the bag's /tf_static."""
    from vpr_ros.core.build.bag_source import read_camera_info, read_pose_child_frame, read_static_transform
    from vpr_ros.core.map.camera import MapCamera

    K, size, optical = read_camera_info(bag, args.camera_info_topic)
    mounting = args.camera_in_body
    if mounting is None:
        body = (args.tf_frames[1] if args.tf_frames else
                read_pose_child_frame(bag, args.pose_topic) if args.pose_topic else None)
        if body and optical:
            mounting = read_static_transform(bag, body, optical)
        if mounting is None:
            logging.getLogger("vpr_ros").warning(
                "the camera's pose on the body (%s -> %s) is not in the bag's /tf_static: loop closures stay "
                "camera-to-camera edges and vpr/pose cannot be the camera's metric pose; give --camera-in-body",
                body or "(pose source without a child frame)", optical or "(CameraInfo without a frame)")
    return MapCamera(K, size, optical, mounting)


def _pose7(text: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated numbers, got {text!r}") from None
    if values.shape != (7,) or abs(np.linalg.norm(values[3:]) - 1.0) > 1e-3:
        raise argparse.ArgumentTypeError("expected x,y,z,qx,qy,qz,qw with a unit quaternion")
    return values


def _input_size(text: str) -> tuple[int, int] | str:
    if text == "auto":
        return text
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or auto, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise argparse.ArgumentTypeError(f"input size {width}x{height}: both must be positive multiples of 32")
    return width, height


if __name__ == "__main__":
    sys.exit(main())
