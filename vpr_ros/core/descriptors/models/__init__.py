"""Published VPR architectures, written here, whose state dicts have the layout of the authors'
released checkpoints, so those files load with `strict=True`:

| preset | paper | backbone | dim | input | released file |
|---|---|---|---|---|---|
| `cosplace-r18-512` ... | CosPlace (CVPR 2022) | ResNet-18/50/101 | 32-2048 | 640x480 | `ResNet50_2048_cosplace.pth` |
| `eigenplaces-r50-2048` ... | EigenPlaces (ICCV 2023) | ResNet-18/50/101 | 128-2048 | 640x480 | `ResNet50_2048_eigenplaces.pth` |
| `mixvpr-r50-4096` | MixVPR (WACV 2023) | ResNet-50 to layer3 | 4096 | 320x320 | `resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt` |
| `salad-dinov2-8448` | SALAD (CVPR 2024) | DINOv2 ViT-B/14 | 8448 | 322x322 | `dino_salad.ckpt` |
| `boq-r50-16384` | BoQ (CVPR 2024) | ResNet-50 to layer3 | 16384 | 384x384 | `resnet50_16384.pth` |
| `boq-dinov2-12288` | BoQ (CVPR 2024) | DINOv2 ViT-B/14 | 12288 | 322x322 | `dinov2_12288.pth` |
| `megaloc-dinov2-8448` | MegaLoc (2025) | DINOv2 ViT-B/14 | 8448 | 322x322 | `model.safetensors` (or `megaloc.torch`) |

Input sizes are those the authors evaluate with (MegaLoc and the CosPlace family take any size; 322
and 640x480 keep a CPU usable); every preset normalises with the ImageNet mean and std inside the
descriptor, so exports carry it. No weights ship with vpr_ros and none are ever downloaded: a preset
takes `checkpoint=PATH`, or `random_weights=True` (seeded, untrained: tests and benchmarks only).
"""

from torch import nn

from vpr_ros.core.descriptors.models.boq import BoQNet
from vpr_ros.core.descriptors.models.gem_fc import RELEASED_DIMS, GeMFCNet
from vpr_ros.core.descriptors.models.mixvpr import MixVPRNet
from vpr_ros.core.descriptors.models.salad import MegaLocNet, SaladNet
from vpr_ros.core.descriptors.models.vit import PATCH

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT = {"resnet18": "r18", "resnet50": "r50", "resnet101": "r101"}
RELEASE_NAMES = {"resnet18": "ResNet18", "resnet50": "ResNet50", "resnet101": "ResNet101"}


def _conf(model: str, input_size: tuple[int, int], **arch) -> dict:
    return {
        "model": model,
        **arch,
        "input_size": input_size,  # (width, height) the images are resized to
        "mean": IMAGENET_MEAN,  # per-channel normalisation inside the descriptor (images in [0, 1])
        "std": IMAGENET_STD,
        "checkpoint": None,  # path of the weights file (.pth/.ckpt/.pt through weights_only, or .safetensors)
        "random_weights": False,  # True: untrained weights from `seed` (tests and benchmarks only)
        "seed": 0,
        "pca_dim": 0,  # PCA-whitening of the map's descriptors to this many dimensions (0: off, as published)
        "whiten_shrinkage": 1.0,
        "min_frames_for_pca": 1000,
        "index": "Flat",
    }


def _presets() -> tuple[dict[str, dict], dict[str, str]]:
    presets, releases = {}, {}
    for model, dims in RELEASED_DIMS.items():
        for backbone, sizes in dims.items():
            for dim in sizes:
                name = f"{model}-{SHORT[backbone]}-{dim}"
                presets[name] = _conf(model, (640, 480), backbone=backbone, output_dim=dim)
                releases[name] = f"{RELEASE_NAMES[backbone]}_{dim}_{model}.pth"
    presets["mixvpr-r50-4096"] = _conf("mixvpr", (320, 320))
    releases["mixvpr-r50-4096"] = "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt"
    presets["salad-dinov2-8448"] = _conf("salad", (322, 322))
    releases["salad-dinov2-8448"] = "dino_salad.ckpt"
    presets["boq-r50-16384"] = _conf("boq", (384, 384), backbone="resnet50")
    releases["boq-r50-16384"] = "resnet50_16384.pth"
    presets["boq-dinov2-12288"] = _conf("boq", (322, 322), backbone="dinov2")
    releases["boq-dinov2-12288"] = "dinov2_12288.pth"
    presets["megaloc-dinov2-8448"] = _conf("megaloc", (322, 322))
    releases["megaloc-dinov2-8448"] = "model.safetensors (Hugging Face gberton/MegaLoc) or megaloc.torch"
    return presets, releases


PUBLISHED_PRESETS, RELEASED_FILES = _presets()


def check_input_size(conf: dict) -> None:
    """Refuse an input size the architecture cannot take (a preset override), before any image arrives."""
    width, height = conf["input_size"]
    uses_vit = conf["model"] in ("salad", "megaloc") or conf.get("backbone") == "dinov2"
    if uses_vit and (width % PATCH or height % PATCH or (width // PATCH) * (height // PATCH) <= 64):
        raise ValueError(f"{conf['model']} input_size {width}x{height}: a DINOv2 backbone needs multiples of "
                         f"{PATCH} pixels and more than 64 patches (e.g. 322x322)")
    if conf["model"] == "mixvpr" and (width, height) != (320, 320):
        raise ValueError(f"mixvpr input_size {width}x{height}: its mixers are fixed to a 20x20 map, i.e. 320x320")


# model name -> the architecture, built from the preset's configuration (one file per family)
MODELS = {
    "cosplace": lambda conf: GeMFCNet(conf["backbone"], conf["output_dim"]),
    "eigenplaces": lambda conf: GeMFCNet(conf["backbone"], conf["output_dim"]),
    "mixvpr": lambda conf: MixVPRNet(),
    "salad": lambda conf: SaladNet(),
    "boq": lambda conf: BoQNet(conf["backbone"]),
    "megaloc": lambda conf: MegaLocNet(),
}


def build_model(conf: dict) -> nn.Module:
    """The architecture a published preset's configuration names, with fresh (random) weights."""
    if conf["model"] not in MODELS:
        raise ValueError(f"unknown published model {conf['model']!r}; choose one of {sorted(MODELS)}")
    check_input_size(conf)
    return MODELS[conf["model"]](conf)
