"""Image-folder datasets: `query/`, `ref/` and `ground_truth.csv` (the ../shared/data/corridor format).

ground_truth.csv has a header `query,matching_refs` and one row per query: the query's path relative
to the dataset root, and the space-separated relative paths of the references showing the same place.
"""

import csv
from dataclasses import dataclass, field
from pathlib import Path

from vpr_ros.core.inputs.images import list_images


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
