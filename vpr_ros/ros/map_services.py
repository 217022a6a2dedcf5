"""The node's map services: `vpr/load_map` swaps in another map (the current one stays on any failure),
`vpr/save_map` writes the current map atomically. Both go through the Localizer, which owns the map and
its lock. Each answers with the true outcome and never raises."""

import os
from pathlib import Path

from vpr_ros.core.map.store import MapError
from vpr_ros.core.pipeline.localizer import Localizer


class MapServices:
    """Answers vpr/load_map and vpr/save_map for one node's Localizer."""

    def __init__(self, localizer: Localizer, map_path: str, save_map_path: str, health, logger):
        """map_path: the configured map (reloaded by an empty request); save_map_path: where an empty save goes."""
        self.localizer, self.map_path, self.save_map_path = localizer, map_path, save_map_path
        self.health, self.logger = health, logger

    def load(self, request, response):
        """Load request.map_path (empty: reload the configured map); the current map stays on any failure."""
        path = request.map_path.strip() or self.map_path
        if not path:
            response.success, response.message = False, ("no map_path in the request and no map configured to "
                                                         "reload (map_path parameter is empty)")
            return response
        path = os.path.normpath(Path(path).expanduser().absolute())
        try:
            vpr_map = self.localizer.load_map(path)
        except Exception as exc:  # noqa: BLE001: whatever a map file does, the caller gets an answer
            if not isinstance(exc, (MapError, ValueError, OSError)):
                self.health.count("errors")
            response.success = False
            response.message = f"map not loaded, the current map stays: {type(exc).__name__}: {exc}"
            self.logger.error(f"vpr/load_map {path}: {response.message}")
            return response
        self.map_path = path
        response.success, response.message = True, f"loaded {vpr_map.name}"
        response.map_name, response.map_size = vpr_map.name, len(vpr_map)
        self.logger.info(f"loaded map {vpr_map.name} ({len(vpr_map)} frames) from {path}")
        return response

    def save(self, request, response):
        """Save the current map atomically (only an existing vpr_ros map is ever replaced), or append this
        session's frames to the map at the path."""
        path = request.map_path.strip() or self.save_map_path
        if not path:
            response.success, response.message = False, "no map_path in the request and no save_map_path parameter"
            return response
        try:
            saved, size = self.localizer.save_map(path, overwrite=request.overwrite,
                                                  append=getattr(request, "append", False))
        except Exception as exc:  # noqa: BLE001: the caller gets the true outcome, the node keeps running
            if not isinstance(exc, (FileExistsError, ValueError, OSError)):  # MapError is a ValueError
                self.health.count("errors")
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
            self.logger.error(f"vpr/save_map {path}: {response.message}")
            return response
        response.success, response.message, response.map_path, response.map_size = True, "saved", str(saved), size
        self.logger.info(f"saved map ({size} frames) to {saved}")
        return response
