"""`vpr_merge_maps`: merge maps of one site built in one descriptor space into one multi-session map.

    vpr_merge_maps maps/lap1 maps/lap2 maps/site          (lap2 built with --descriptor-from maps/lap1)

The inputs are read and never changed; the output is written atomically (a half-written map never
appears). Maps in different descriptor spaces (vocabulary, PCA or weights), with poses in different
frames, other local features or another camera are refused with the reason. The merged map has no
uncertainty model: run vpr_train_uncertainty on it.
"""

import argparse
import logging
import sys
from pathlib import Path

from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.build.sessions import merge_maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_merge_maps", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("maps", type=Path, nargs="+", help="input map directories, then the output directory")
    parser.add_argument("--name", help="merged map name (default: the output folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing map at the output")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    *inputs, output = args.maps
    if len(inputs) < 2:
        parser.error("give at least two input maps and the output directory")
    if any(output.absolute() == path.absolute() for path in inputs):
        parser.error(f"the output {output} is one of the inputs; inputs are never changed, choose another path")
    if output.exists() and not args.overwrite:
        parser.error(f"{output} exists; pass --overwrite to replace it")
    try:
        maps = [VPRMap.load(path, with_uncertainty=False) for path in inputs]
        merged = merge_maps(maps, args.name or output.name, [str(p) for p in inputs])
        path = merged.save(output, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, MapError) as exc:
        print(f"vpr_merge_maps: error: {exc}", file=sys.stderr)
        return 2
    sessions = ", ".join(str(s) for s in merged.frames.sessions)
    print(f"map {merged.name}: {len(merged)} frames in {len(merged.frames.sessions)} sessions ({sessions}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
