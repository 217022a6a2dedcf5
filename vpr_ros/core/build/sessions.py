"""Maps that grow over sessions and robots: merge maps recorded in one descriptor space.

A map's descriptor space is its descriptor's fingerprint (the preset, its weights, and what was fitted on
the map: VLAD vocabulary, PCA). Descriptors of two spaces cannot be compared, so maps are merged only
when their spaces agree; a second session is put in the first one's space by building it with
`--descriptor-from` (map_builder.build_map's `descriptor`). The merged index is the first map's, cloned
and extended with the others' vectors: for Flat and HNSW that is the index built from all frames at once,
and a trained (IVF, PQ) index keeps its quantiser. Uncertainty models are fitted on one map's statistics,
so a merged map has none until vpr_train_uncertainty runs on it.
"""

import copy
from pathlib import Path

import faiss
import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.map.store import MapError, VPRMap


def check_same_space(maps: list[VPRMap], labels: list[str] | None = None) -> None:
    """Raise MapError naming the first map whose descriptor space (fingerprint) differs from the first's."""
    labels = labels or [m.name for m in maps]
    first = maps[0].space
    for vpr_map, label in zip(maps[1:], labels[1:]):
        space = vpr_map.space
        if space != first:
            raise MapError(
                f"maps {labels[0]} (descriptor space {first[:12]}, preset {maps[0].descriptor.preset}) and {label} "
                f"(descriptor space {space[:12]}, preset {vpr_map.descriptor.preset}) are in different descriptor "
                "spaces (another vocabulary, PCA or weights) and cannot be merged; build the second with "
                f"vpr_build_map --descriptor-from {labels[0]}")


def check_can_grow(vpr_map: VPRMap, label: str) -> None:
    """MapError when the map's index cannot take more frames (an on-disk index is read-only)."""
    if vpr_map.index.read_only:
        raise MapError(f"map {label} has an on-disk {vpr_map.index.factory} index, which cannot grow; build one map "
                       "from all the recordings instead (vpr_build_map --bag A --bag B ..., docs/city_scale.md)")


def _check_compatible(maps: list[VPRMap], labels: list[str]) -> None:
    """What one map holds once: the poses' frame, the local features' extractor, the camera."""
    first, label = maps[0], labels[0]
    for vpr_map, name in zip(maps, labels):
        check_can_grow(vpr_map, name)
    for other, name in zip(maps[1:], labels[1:]):
        if other.frame_id != first.frame_id:
            raise MapError(f"maps {label} (poses in {first.frame_id!r}) and {name} (poses in {other.frame_id!r}) do "
                           "not share a coordinate frame; express both in one frame before merging")
        if other.local_conf != first.local_conf:
            raise MapError(f"maps {label} and {name} store different local features ({first.local_conf} vs "
                           f"{other.local_conf}); rebuild one with the other's --local-features and --max-keypoints")
        camera = [m.camera.to_json() if m.camera is not None else None for m in (first, other)]
        if camera[0] != camera[1]:
            raise MapError(f"maps {label} and {name} record different cameras (intrinsics, size or mounting); a map "
                           "holds one camera in this format, so they cannot be merged")
        if other.index.factory != first.index.factory:
            raise MapError(f"maps {label} ({first.index.factory}) and {name} ({other.index.factory}) use different "
                           "index types")


def merge_maps(maps: list[VPRMap], name: str, labels: list[str] | None = None) -> VPRMap:
    """One map holding every frame of `maps` (in order; keys continue from map to map), in their common
    descriptor space. The inputs are not changed. Raises MapError when they cannot be merged."""
    if len(maps) < 2:
        raise MapError("merging needs at least two maps")
    labels = labels or [m.name for m in maps]
    check_same_space(maps, labels)
    _check_compatible(maps, labels)
    seen: dict[str, str] = {}
    for vpr_map, label in zip(maps, labels):
        for session in vpr_map.frames.sessions:
            if session.id in seen:
                raise MapError(f"session {session} is in both {seen[session.id]} and {label}; a session is "
                               "merged once (rename one with vpr_build_map --session)")
            seen[session.id] = label
    first = maps[0]
    frames = copy.deepcopy(first.frames)
    with_depth = any(m.local is not None and m.local.depth is not None for m in maps)
    local = _materialised(first.local, with_depth) if first.local is not None else None
    for other in maps[1:]:
        frames.extend(other.frames)
        if local is not None:
            local.extend(_materialised(other.local, with_depth))
    descriptors = np.concatenate([m.descriptors for m in maps]).astype(np.float32)
    index = DescriptorIndex(first.index.dim, first.index.factory, first.index.search_params)
    index.index = faiss.clone_index(first.index.index)
    for other in maps[1:]:
        index.add(other.descriptors)
    frames.validate()
    merged = VPRMap(name, first.descriptor, descriptors, frames, index, first.frame_id, local, first.local_conf,
                    camera=first.camera)
    if any(m.uncertainty is not None for m in maps):
        LOGGER.warning("map %s: the inputs' uncertainty models are not carried over (each was fitted on one map); "
                       "run vpr_train_uncertainty on the merged map", name)
    LOGGER.info("merged %d maps (%s) into %s: %d frames in %d sessions", len(maps), ", ".join(labels), name,
                len(merged), len(frames.sessions))
    return merged


def _materialised(table, with_depth: bool):
    """An in-memory copy of a (memory-mapped) local feature table, with a depth column when `with_depth`."""
    columns = {c: np.array(getattr(table, c)) for c in table.COLUMNS}
    out = type(table)(**columns)
    if with_depth:
        out.depth = (np.array(table.depth, np.float32) if table.depth is not None else
                     np.full(table.keypoints.shape[:2], np.nan, np.float32))
    return out


def session_map(vpr_map: VPRMap, session_id: str) -> VPRMap:
    """A map of one session's frames of `vpr_map`, in the same descriptor space (e.g. a slam run's keyframes,
    to append to the map it started from)."""
    rows = vpr_map.frames.rows_of(session_id)
    if not len(rows):
        raise MapError(f"map {vpr_map.name} has no frames of session {session_id!r}")
    frames = vpr_map.frames.select(rows)
    frames.sessions, frames.session = [vpr_map.frames.sessions[frames.session[0]]], np.zeros(len(rows), np.int32)
    local = vpr_map.local.select(rows) if vpr_map.local is not None else None
    return VPRMap.create(vpr_map.name, vpr_map.descriptor, vpr_map.descriptors[rows], frames, vpr_map.frame_id,
                         vpr_map.index.search_params, local=local, local_conf=vpr_map.local_conf,
                         camera=vpr_map.camera)


def append_session(path, vpr_map: VPRMap, session_id: str) -> tuple[Path, int]:
    """Add session `session_id` of `vpr_map` to the map directory at `path` (which is replaced atomically and
    stays as it was on any failure); returns the path and the frame count of the result."""
    base = VPRMap.load(path, with_uncertainty=False)
    merged = merge_maps([base, session_map(vpr_map, session_id)], base.name,
                        [str(path), f"session {session_id!r} of {vpr_map.name}"])
    return merged.save(path, overwrite=True), len(merged)
