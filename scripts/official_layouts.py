#!/usr/bin/env python3
"""Check vpr_ros's published architectures against the authors' own model definitions.

A developer tool, not part of the package or of CI: it imports the official repositories' code,
which vpr_ros does not carry. Give it a folder holding checkouts of

    CosPlace/ (gmberton/CosPlace)        EigenPlaces/ (gmberton/EigenPlaces)   MixVPR/ (amaralibey/MixVPR)
    salad/ (serizba/salad)               Bag-of-Queries/ (amaralibey/Bag-of-Queries)
    MegaLoc/ (gmberton/MegaLoc)          MegaLoc-v1/megaloc_model.py (MegaLoc at f4182b1, the megaloc.torch layout)
    dinov2/ (facebookresearch/dinov2; stands in for the torch.hub.load calls of SALAD, BoQ and MegaLoc v1)

For each checked preset it builds the official model with random weights (no downloads: the hub
calls are answered from the local dinov2 checkout, torchvision backbones get weights=None), then

1. writes the official state dict layout (key and shape per line) to test/data/official_layouts/,
   the files test_published_models.py pins the architectures to (with --write);
2. loads those official random weights into vpr_ros's architecture with strict=True and compares
   the two forward passes on the same normalised image (relative difference of the descriptors).

    .venv/bin/python scripts/official_layouts.py /path/to/official --write
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor  # noqa: E402
from vpr_ros.core.descriptors.models.checkpoints import RENAMES  # noqa: E402

LAYOUT_DIR = REPO / "test" / "data" / "official_layouts"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_path(folder: Path, func):
    """Run func with folder first on sys.path and its top-level packages importable afresh."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("models", "src", "backbones", "boq")]:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        return func()
    finally:
        sys.path.remove(str(folder))


def official_models(root: Path) -> dict:
    """preset -> (official module, function from the module's output to the descriptor, layout rename)."""
    sys.path.insert(0, str(root / "dinov2"))
    from dinov2.hub.backbones import dinov2_vitb14

    def hub_load(repo, name, *args, **kwargs):
        if name != "dinov2_vitb14":
            raise RuntimeError(f"no network: unexpected torch.hub.load({repo!r}, {name!r})")
        return dinov2_vitb14(pretrained=False)

    torch.hub.load = hub_load
    models = {}
    cosplace = _with_path(root / "CosPlace", lambda: _load(root / "CosPlace/cosplace_model/cosplace_network.py",
                                                           "cosplace_network"))
    import torchvision

    def no_weights(name):  # CosPlace asks torchvision for ImageNet weights; the layout needs none
        return getattr(torchvision.models, name.lower())(weights=None)

    cosplace.get_pretrained_torchvision_model = no_weights
    for backbone, dim in (("ResNet18", 512), ("ResNet50", 2048), ("ResNet101", 2048), ("ResNet50", 512)):
        short = backbone.lower().replace("resnet", "r")
        models[f"cosplace-{short}-{dim}"] = (cosplace.GeoLocalizationNet(backbone, dim), lambda o: o)
    eigen = _with_path(root / "EigenPlaces", lambda: _load(root / "EigenPlaces/eigenplaces_model/eigenplaces_network.py",
                                                           "eigenplaces_network"))

    def eigen_backbone(name):  # EigenPlaces seeds its backbone from CosPlace through torch.hub: skip that
        layers = list(getattr(torchvision.models, name.lower())().children())[:-2]
        return torch.nn.Sequential(*layers), eigen.CHANNELS_NUM_IN_LAST_CONV[name]

    eigen._get_backbone = eigen_backbone
    models["eigenplaces-r101-2048"] = (eigen.GeoLocalizationNet_("ResNet101", 2048), lambda o: o)

    def mixvpr():
        resnet = _load(root / "MixVPR/models/backbones/resnet.py", "mixvpr_resnet")
        agg = _load(root / "MixVPR/models/aggregators/mixvpr.py", "mixvpr_agg")
        net = torch.nn.Module()
        net.backbone = resnet.ResNet("resnet50", pretrained=False, layers_to_freeze=2, layers_to_crop=[4])
        net.aggregator = agg.MixVPR(in_channels=1024, in_h=20, in_w=20, out_channels=1024, mix_depth=4,
                                    mlp_ratio=1, out_rows=4)
        net.forward = lambda x: net.aggregator(net.backbone(x))
        return net

    models["mixvpr-r50-4096"] = (_with_path(root / "MixVPR", mixvpr), lambda o: o)

    def salad():
        backbone = _load(root / "salad/models/backbones/dinov2.py", "salad_dinov2")
        agg = _load(root / "salad/models/aggregators/salad.py", "salad_agg")
        net = torch.nn.Module()
        net.backbone = backbone.DINOv2("dinov2_vitb14", num_trainable_blocks=4, norm_layer=True, return_token=True)
        net.aggregator = agg.SALAD(num_channels=768, num_clusters=64, cluster_dim=128, token_dim=256)
        net.forward = lambda x: net.aggregator(net.backbone(x))
        return net

    models["salad-dinov2-8448"] = (_with_path(root / "salad", salad), lambda o: o)

    def boq(kind):
        def build():
            backbones = _load(root / "Bag-of-Queries/src/backbones.py", "boq_backbones")
            boq_module = _load(root / "Bag-of-Queries/src/boq.py", "boq_module")
            net = torch.nn.Module()
            if kind == "dinov2":
                net.backbone = backbones.DinoV2()
                net.aggregator = boq_module.BoQ(in_channels=768, proj_channels=384, num_queries=64, num_layers=2,
                                                row_dim=32)
            else:
                net.backbone = backbones.ResNet("resnet50", pretrained=False, crop_last_block=True)
                net.aggregator = boq_module.BoQ(in_channels=1024, proj_channels=512, num_queries=64, num_layers=2,
                                                row_dim=32)
            net.forward = lambda x: net.aggregator(net.backbone(x))
            return net
        return build

    models["boq-r50-16384"] = (_with_path(root / "Bag-of-Queries", boq("resnet50")), lambda o: o[0])
    models["boq-dinov2-12288"] = (_with_path(root / "Bag-of-Queries", boq("dinov2")), lambda o: o[0])
    megaloc = _load(root / "MegaLoc/megaloc_model.py", "megaloc_model")
    models["megaloc-dinov2-8448"] = (megaloc.MegaLoc(), lambda o: o)
    megaloc_v1 = _load(root / "MegaLoc-v1/megaloc_model.py", "megaloc_model_v1")
    models["megaloc-dinov2-8448@v1"] = (megaloc_v1.MegaLocModel(), lambda o: o)
    return models


def write_layout(name: str, module: torch.nn.Module) -> Path:
    LAYOUT_DIR.mkdir(parents=True, exist_ok=True)
    path = LAYOUT_DIR / f"{name}.txt"
    lines = [f"{k} {','.join(map(str, v.shape))}" for k, v in module.state_dict().items()]
    path.write_text(f"# state dict layout of the official {name} definition (scripts/official_layouts.py)\n"
                    + "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder with the official checkouts")
    parser.add_argument("--write", action="store_true", help="write the layouts to test/data/official_layouts")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    worst = 0.0
    for name, (official, pick) in official_models(args.root).items():
        official.eval()
        preset = name.split("@")[0]
        ours = GlobalDescriptor(preset, random_weights=True)
        state = official.state_dict()
        if args.write:
            write_layout(name, official)
        ours.net.load_state_dict(RENAMES.get(ours.conf["model"], lambda s: s)(state), strict=True)
        width, height = ours.input_size
        images = torch.rand(2, 3, height, width)
        with torch.inference_mode():
            want = pick(official((images - ours.pixel_mean) / ours.pixel_std)).numpy()
            got = ours(images).numpy()
        rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        worst = max(worst, rel)
        print(f"{name:26s} {len(state):4d} tensors  strict load ok  {got.shape[1]:6d}-d  relative difference {rel:.2e}")
    print(f"worst relative difference {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
