"""Where a map's images come from: the frames of an image folder (with stamps, poses and GPS from a CSV),
and a loader that re-reads any map source (an image file, or a bag reference) after the map was built."""

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from vpr_ros.core.build.bag_source import BagFrames
from vpr_ros.core.inputs.images import IMAGE_SUFFIXES, read_image
from vpr_ros.core.map.frames import POSE_FIELDS, FrameTable

# CSV column spellings: position in a metric frame (x y z, or UTM easting northing) and GPS
_EASTING, _NORTHING = ("easting", "utm_easting", "utm_e"), ("northing", "utm_northing", "utm_n")
_LATITUDE, _LONGITUDE = ("latitude", "lat"), ("longitude", "lon", "lng")
_ALTITUDE = ("altitude", "alt", "elevation")


def _column(columns: set[str], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in columns), None)


def frames_from_folder(folder: str | Path, poses_csv: str | Path | None = None) -> FrameTable:
    """The images of a folder and its subfolders (sorted by path) and, optionally, their stamps, poses
    and GPS from a CSV.

    CSV columns: `image` (path relative to the folder, or the file name when it is unique) and any of
    `stamp_ns` or `timestamp` (seconds); a position: `x y z qx qy qz qw` (`qx..qw` default to identity when
    only x y z are given) or UTM `easting northing` (also utm_easting/utm_northing; z from `altitude`, else
    0; one zone per map: the frame is the caller's, e.g. --frame-id utm_32N); and GPS: `latitude longitude`
    (also lat/lon/lng) with an optional `altitude`. Images missing from the CSV get no pose; without stamps
    every stamp is 0 (and keyframes by time are meaningless).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                    key=lambda p: p.relative_to(folder).as_posix())
    if not images:
        raise ValueError(f"no images in {folder}")
    n = len(images)
    stamps, pose, gps = np.zeros(n, np.int64), np.full((n, 7), np.nan), np.full((n, 3), np.nan)
    if poses_csv is not None:
        row_of = {p.relative_to(folder).as_posix(): i for i, p in enumerate(images)}
        names = Counter(p.name for p in images)
        row_of.update({p.name: i for i, p in enumerate(images) if names[p.name] == 1})
        with open(poses_csv, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if "image" not in columns:
                raise ValueError(f"{poses_csv} needs an 'image' column; found {sorted(columns)}")
            east, north = _column(columns, _EASTING), _column(columns, _NORTHING)
            lat, lon, alt = _column(columns, _LATITUDE), _column(columns, _LONGITUDE), _column(columns, _ALTITUDE)
            if {"x", "y", "z"} <= columns and east:
                raise ValueError(f"{poses_csv}: give positions as x y z or as UTM easting northing, not both")
            for line, row in enumerate(reader, start=2):
                i = row_of.get(row["image"])
                if i is None:
                    raise ValueError(f"{poses_csv}:{line}: image {row['image']!r} is not in {folder}"
                                     + (" (its name is not unique there: give its path in the folder)"
                                        if names[Path(row["image"]).name] > 1 else ""))
                try:
                    if "stamp_ns" in columns:
                        stamps[i] = int(row["stamp_ns"])
                    elif "timestamp" in columns:
                        stamps[i] = round(float(row["timestamp"]) * 1e9)
                    if {"x", "y", "z"} <= columns:
                        values = [float(row[f]) if row.get(f) not in (None, "") else default
                                  for f, default in zip(POSE_FIELDS, (np.nan,) * 3 + (0.0, 0.0, 0.0, 1.0))]
                        pose[i] = values
                    elif east and north:
                        pose[i] = [float(row[east] or "nan"), float(row[north] or "nan"),
                                   float((row.get(alt) if alt else "") or 0.0), 0.0, 0.0, 0.0, 1.0]
                    if lat and lon:
                        gps[i] = [float(row[lat] or "nan"), float(row[lon] or "nan"), float((row.get(alt) if alt else "") or 0.0)]
                except ValueError as exc:
                    raise ValueError(f"{poses_csv}:{line}: {exc}") from exc
        norms = np.linalg.norm(pose[:, 3:], axis=1)
        if (np.isfinite(norms) & (np.abs(norms - 1.0) > 1e-3)).any():
            raise ValueError(f"{poses_csv}: quaternions (qx qy qz qw) must have unit norm")
        usable = np.isfinite(gps[:, :2]).all(axis=1)
        if (usable & ((np.abs(gps[:, 0]) > 90) | (np.abs(gps[:, 1]) > 180))).any():
            raise ValueError(f"{poses_csv}: latitudes must lie in [-90, 90] and longitudes in [-180, 180] "
                             "(UTM coordinates go in easting/northing columns)")
    return FrameTable.build(stamps, [str(p) for p in images], pose=pose, gps=gps)


def load_image_file(source: str) -> np.ndarray:
    """`load` for frames_from_folder sources."""
    return read_image(Path(source))


class SourceLoader:
    """`load(source)` for any map source: an image file path, or a bag reference `bag:topic@log_ns`.

    Used to re-read a map's images after it was built (e.g. to train its uncertainty model); raises
    FileNotFoundError when the file or bag is no longer there.
    """

    def __init__(self):
        self._bags = {}

    def __call__(self, source: str) -> np.ndarray:
        path = Path(source)
        if path.is_file():
            return read_image(path)
        head, at, stamp = source.rpartition("@")
        split = head.rfind(":/")
        if at and stamp.isdigit() and split > 0 and Path(head[:split]).exists():
            key = (head[:split], head[split + 1:])
            if key not in self._bags:
                self._bags[key] = BagFrames(Path(key[0]), key[1], FrameTable()).loader()
            return self._bags[key](source)
        raise FileNotFoundError(f"map image {source} is not available (file or bag moved or deleted)")
