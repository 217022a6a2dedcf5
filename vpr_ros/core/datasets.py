"""Image-folder datasets: `query/`, `ref/` and `ground_truth.csv` (the ../shared/data/corridor format).

ground_truth.csv has a header `query,matching_refs` and one row per query: the query's path relative
to the dataset root, and the space-separated relative paths of the references showing the same place.
"""

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vpr_ros.core.images import opencv_to_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """An image file -> H x W (gray) or H x W x 3/4 RGB(A) array, keeping 16-bit depth."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return opencv_to_rgb(image)


@dataclass
class ImageFolderDataset:
    """Query and reference images with, per query, the set of reference indices of the same place."""

    root: Path
    queries: list[Path] = field(default_factory=list)
    refs: list[Path] = field(default_factory=list)
    positives: list[set[int]] = field(default_factory=list)

    @classmethod
    def load(cls, root: str | Path) -> "ImageFolderDataset":
        root = Path(root)
        gt_path = root / "ground_truth.csv"
        if not gt_path.is_file():
            raise FileNotFoundError(f"{gt_path} not found; expected query/, ref/ and ground_truth.csv")
        refs = list_images(root / "ref")
        ref_index = {str(p.relative_to(root)): i for i, p in enumerate(refs)}
        queries, positives = [], []
        with gt_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or {"query", "matching_refs"} - set(reader.fieldnames):
                raise ValueError(f"{gt_path} needs the columns query,matching_refs; found {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                unknown = [r for r in row["matching_refs"].split() if r not in ref_index]
                if unknown:
                    raise ValueError(f"{gt_path}:{line}: references not in ref/: {unknown[:3]}")
                query = root / row["query"]
                if not query.is_file():
                    raise FileNotFoundError(f"{gt_path}:{line}: query image {query} does not exist")
                queries.append(query)
                positives.append({ref_index[r] for r in row["matching_refs"].split()})
        if not refs or not queries:
            raise ValueError(f"dataset {root} has {len(refs)} references and {len(queries)} queries")
        return cls(root, queries, refs, positives)
