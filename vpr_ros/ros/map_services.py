"""The node's map services: `vpr/load_map` swaps in another map (the current one stays on any failure),
`vpr/save_map` writes the current map atomically. Each answers with the true outcome and never raises."""

import os
from pathlib import Path

from vpr_ros.core.maps.map_store import MapError
from vpr_ros.core.maps.sessions import append_session


def load_map(node, request, response):
    """Load request.map_path (empty: reload the configured map); the current map stays on any failure."""
    path = request.map_path.strip() or node.map_path
    if not path:
        response.success, response.message = False, ("no map_path in the request and no map configured to "
                                                     "reload (map_path parameter is empty)")
        return response
    path = os.path.normpath(Path(path).expanduser().absolute())
    try:
        vpr_map = node.read_map(path)
        with node.map_lock:
            previous = node.localizer.vpr_map
            node.localizer.set_map(vpr_map)
        if previous is not None and previous.checksums is not None:
            previous.checksums.stop()  # the map it watched no longer serves
    except Exception as exc:  # noqa: BLE001: whatever a map file does, the caller gets an answer
        if not isinstance(exc, (MapError, ValueError, OSError)):
            node.health.count("errors")
        response.success = False
        response.message = f"map not loaded, the current map stays: {type(exc).__name__}: {exc}"
        node.get_logger().error(f"vpr/load_map {path}: {response.message}")
        return response
    node.map_path = path
    response.success, response.message = True, f"loaded {vpr_map.name}"
    response.map_name, response.map_size = vpr_map.name, len(vpr_map)
    node.get_logger().info(f"loaded map {vpr_map.name} ({len(vpr_map)} frames) from {path}")
    return response

def save_map(node, request, response):
    """Save the current map atomically; only an existing vpr_ros map is ever replaced."""
    path = request.map_path.strip() or node.params["save_map_path"]
    if not path:
        response.success, response.message = False, "no map_path in the request and no save_map_path parameter"
        return response
    try:
        with node.map_lock:
            if node.localizer.vpr_map is None:
                raise ValueError("no map yet (slam is still collecting its bootstrap frames)")
            if getattr(request, "append", False):  # this session's frames join the map at `path`
                saved, size = append_session(path, node.localizer.vpr_map, node.localizer.session.id)
            else:
                saved = node.localizer.vpr_map.save(path, overwrite=request.overwrite)
                size = len(node.localizer.vpr_map)
    except Exception as exc:  # noqa: BLE001: the caller gets the true outcome, the node keeps running
        if not isinstance(exc, (FileExistsError, ValueError, OSError)):  # MapError is a ValueError
            node.health.count("errors")
        response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        node.get_logger().error(f"vpr/save_map {path}: {response.message}")
        return response
    response.success, response.message, response.map_path, response.map_size = True, "saved", str(saved), size
    node.get_logger().info(f"saved map ({size} frames) to {saved}")
    return response
