"""A build worker's first frame of a shard deep in a long bag: read from the bag's start (the loader before issue
25's follow-up) or opened at the frame's time (now), in one run.

    .venv/bin/python benchmarks/bag_seek.py --images ../shared/data/corridor/ref --frames 4000 [--raw]

Writes an mcap bag (rosbags) of `--frames` images (the folder's, cycled, at 640x480: JPEG CompressedImage, or
with --raw rgb8 Image as many cameras record them), then, for shards starting at
0, 1/4, 1/2, 3/4 and the end of the bag, times a fresh loader's first image both ways (best of 3). Both ways
must give the same image.
"""

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.core.maps.bag_source import read_bag_frames

def write_bag(path: Path, images: list[Path], frames: int, raw: bool, period_ns: int = 100_000_000) -> str:
    """The bag; returns its image topic."""
    store = get_typestore(Stores.LATEST)
    t = store.types
    pixels = [cv2.resize(cv2.imread(str(p)), (640, 480)) for p in images]
    encoded = [cv2.imencode(".jpg", image)[1].tobytes() for image in pixels]
    topic, msgtype = (("/camera/image_raw", "sensor_msgs/msg/Image") if raw else
                      ("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage"))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for i in range(frames):
            ns = 1_000_000_000_000 + i * period_ns
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](
                sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="camera")
            if raw:
                rgb = np.ascontiguousarray(pixels[i % len(pixels)][:, :, ::-1])
                msg = t["sensor_msgs/msg/Image"](header=header, height=480, width=640, encoding="rgb8",
                                                 is_bigendian=0, step=640 * 3, data=rgb.reshape(-1))
            else:
                msg = t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                           data=np.frombuffer(encoded[i % len(encoded)], np.uint8))
            writer.write(conn, ns, store.serialize_cdr(msg, conn.msgtype))
    return topic


def first_image(bag, source: str, from_start: bool) -> tuple[float, np.ndarray]:
    loader = bag.loader()
    t0 = time.perf_counter()  # both ways open the bag
    if from_start:  # the earlier behaviour: open at the bag's start and read forward to the frame
        loader.REOPEN_AHEAD_NS = 1 << 62
        loader._restart(0)
    image = loader(source)
    return time.perf_counter() - t0, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--raw", action="store_true", help="sensor_msgs/Image rgb8 instead of JPEG")
    args = parser.parse_args()
    images = sorted(args.images.glob("*.jpg")) + sorted(args.images.glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long"
        topic = write_bag(path, images, args.frames, args.raw)
        size = sum(p.stat().st_size for p in path.iterdir()) / 1e6
        bag = read_bag_frames(path, topic)
        print(f"bag: {len(bag.frames)} 640x480 {'rgb8' if args.raw else 'JPEG'} frames, {size:.0f} MB (mcap)")
        print("| shard starts at frame | from the bag's start (s) | opened at its time (s) | ratio |")
        print("|---|---|---|---|")
        for index in (0, args.frames // 4, args.frames // 2, 3 * args.frames // 4, args.frames - 1):
            source = bag.frames.sources[index]
            old = min(first_image(bag, source, True)[0] for _ in range(3))
            new = min(first_image(bag, source, False)[0] for _ in range(3))
            np.testing.assert_array_equal(first_image(bag, source, True)[1], first_image(bag, source, False)[1])
            print(f"| {index} | {old:.3f} | {new:.3f} | x{old / new:.1f} |")


if __name__ == "__main__":
    main()
