"""`vpr_folder_to_bag`: turn an image-folder dataset into rosbag2 (mcap) bags, so it replays like a robot run.

    vpr_folder_to_bag DATASET OUT [--rate 1] [--image-format raw|jpeg|png|passthrough]

A dataset in the ../shared/data/corridor format (query/, ref/, ground_truth.csv) becomes OUT/ref and
OUT/query, one image per 1/rate seconds in name order, and OUT/ground_truth.json: per query stamp the
stamps of its matching references. Build a map from OUT/ref, then score OUT/query against it with
`vpr_eval --map MAP --bag OUT/query --image-topic /camera/image_raw --ground-truth OUT/ground_truth.json`.
A plain image folder becomes OUT/images; with `--poses CSV` (vpr_build_map's format: image, stamp_ns or
timestamp, x y z [qx qy qz qw]) its stamps and poses go into the bag as Odometry and TF.

Images: `raw` decodes each file to sensor_msgs/Image (rgb8, or mono8 for grey files); `passthrough`
copies each JPEG/PNG file's bytes unchanged into a sensor_msgs/CompressedImage; `jpeg`/`png` re-encode.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vpr_ros.core.evaluation.datasets import ImageFolderDataset
from vpr_ros.core.inputs.images import read_image, to_rgb8
from vpr_ros.core.build.sources import frames_from_folder
from vpr_ros.sim.bag_writer import BagWriter

START_NS = 1_700_000_000 * 10**9
FORMATS = ("raw", "jpeg", "png", "passthrough")


def _stamps(n: int, rate: float, start_ns: int) -> list[int]:
    return [start_ns + int(round(i * 1e9 / rate)) for i in range(n)]


def write_images(out: Path, images: list[Path], stamps: list[int], image_format: str,
                 poses: np.ndarray | None = None) -> int:
    """One bag of the images at the given stamps (poses: N x 7 with NaN rows for unknown)."""
    writer_format = "jpeg" if image_format == "passthrough" else image_format
    with BagWriter(out, writer_format) as writer:
        for i, (path, ns) in enumerate(zip(images, stamps)):
            pose = None if poses is None or not np.isfinite(poses[i]).all() else poses[i]
            if image_format == "passthrough":
                kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}.get(path.suffix.lower())
                if kind is None:
                    raise ValueError(f"{path}: passthrough needs JPEG or PNG files; use --image-format raw")
                writer.write_frame(ns, encoded=(kind, path.read_bytes()), pose7=pose)
                continue
            image = read_image(path)
            rgb = image if image.ndim == 2 and image.dtype == np.uint8 else to_rgb8(image)
            writer.write_frame(ns, rgb, pose7=pose)
    return len(images)


def convert_dataset(root: Path, out: Path, rate: float = 1.0, image_format: str = "raw") -> dict:
    """query/ + ref/ + ground_truth.csv -> OUT/ref, OUT/query, OUT/ground_truth.json."""
    dataset = ImageFolderDataset.load(root)
    ref_stamps = _stamps(len(dataset.refs), rate, START_NS)
    query_start = ref_stamps[-1] + 60 * 10**9  # the query traversal starts a minute after the references end
    query_stamps = _stamps(len(dataset.queries), rate, query_start)
    out.mkdir(parents=True, exist_ok=True)
    write_images(out / "ref", dataset.refs, ref_stamps, image_format)
    write_images(out / "query", dataset.queries, query_stamps, image_format)
    table = {"dataset": str(root), "query_stamps_ns": query_stamps,
             "matching_stamps_ns": [sorted(ref_stamps[i] for i in pos) for pos in dataset.positives]}
    (out / "ground_truth.json").write_text(json.dumps(table) + "\n")
    return {"ref": len(dataset.refs), "query": len(dataset.queries)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_folder_to_bag", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="query/ + ref/ + ground_truth.csv, or a plain image folder")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--rate", type=float, default=1.0, help="images per second in the stamps")
    parser.add_argument("--image-format", choices=FORMATS, default="raw")
    parser.add_argument("--poses", type=Path, help="plain folder: CSV of stamps and poses (vpr_build_map's format)")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    try:
        if (args.dataset / "ground_truth.csv").is_file():
            counts = convert_dataset(args.dataset, args.out, args.rate, args.image_format)
            print(f"{args.out / 'ref'}: {counts['ref']} images; {args.out / 'query'}: {counts['query']} images; "
                  f"ground truth: {args.out / 'ground_truth.json'}")
        else:
            frames = frames_from_folder(args.dataset, args.poses)
            images = [Path(s) for s in frames.sources]
            stamps = (frames.stamp_ns.tolist() if args.poses is not None and frames.stamp_ns.any()
                      else _stamps(len(images), args.rate, START_NS))
            args.out.mkdir(parents=True, exist_ok=True)
            n = write_images(args.out / "images", images, stamps, args.image_format,
                             np.where(frames.has_pose[:, None], frames.pose, np.nan))
            print(f"{args.out / 'images'}: {n} images")
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"vpr_folder_to_bag: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
