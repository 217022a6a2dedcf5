"""Published VPR architectures: official state dict layouts, checkpoint loading, forward contract,
ONNX export, and their use in maps and vpr_eval. No released weights can be had here, so the
checkpoints are written from the architectures' own (seeded random) weights."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.models import PUBLISHED_PRESETS, RELEASED_FILES, build_model
from vpr_ros.core.descriptors.models.checkpoints import RENAMES, CheckpointError, layout, read_state_dict
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.retrieval.recognizer import search

LAYOUTS = Path(__file__).parent / "data" / "official_layouts"
# one preset per architecture family; ONNX and round trips run on these
FAMILIES = ["cosplace-r18-512", "eigenplaces-r50-2048", "mixvpr-r50-4096", "salad-dinov2-8448", "boq-r50-16384",
            "boq-dinov2-12288", "megaloc-dinov2-8448"]


def _official_layout(name: str) -> dict[str, tuple[int, ...]]:
    """`key d0,d1,...` per line (a scalar has no dimensions)."""
    result = {}
    for line in (LAYOUTS / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, dims = line.partition(" ")
            result[key] = tuple(int(d) for d in dims.split(",") if d.strip())
    return result


def _meta_layout(preset: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return layout(build_model(PUBLISHED_PRESETS[preset]))


@pytest.fixture(scope="module")
def corridor_batches(corridor_dir):
    """Three real Corridor images per preset input size."""
    images = [read_image(corridor_dir / "query" / f"{i:07d}.jpg") for i in (0, 40, 80)]
    return lambda size: batch_to_tensor(images, size)


def _random(preset: str, seed: int = 0) -> GlobalDescriptor:
    return GlobalDescriptor(preset, random_weights=True, seed=seed)


# ---- layouts pinned to the authors' definitions --------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in LAYOUTS.glob("*.txt")))
def test_layout_is_the_official_one(name):
    """Every key and shape the official definition has (test/data/official_layouts, read from the
    authors' code by scripts/official_layouts.py), and nothing else."""
    preset, _, release = name.partition("@")
    official = _official_layout(name)
    if release:  # an older release: renamed on load into the current layout
        official = layout_after_rename(preset, official)
    assert _meta_layout(preset) == official


def layout_after_rename(preset: str, official: dict) -> dict:
    state = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    return {k: tuple(v.shape) for k, v in RENAMES[PUBLISHED_PRESETS[preset]["model"]](state).items()}


def test_every_family_is_pinned():
    pinned = {p.stem.partition("@")[0] for p in LAYOUTS.glob("*.txt")}
    assert {PUBLISHED_PRESETS[p]["model"] for p in pinned} == {c["model"] for c in PUBLISHED_PRESETS.values()}
    assert set(FAMILIES) - pinned <= {"eigenplaces-r50-2048"}  # eigenplaces is pinned at r101


@pytest.mark.parametrize("preset, key, shape", [
    # what the official definitions say, read by hand (CosPlace/EigenPlaces cosplace_network.py,
    # MixVPR models/, salad models/, Bag-of-Queries src/, MegaLoc megaloc_model.py, dinov2 hub)
    ("cosplace-r50-2048", "backbone.0.weight", (64, 3, 7, 7)),
    ("cosplace-r50-2048", "backbone.7.2.conv3.weight", (2048, 512, 1, 1)),
    ("cosplace-r50-2048", "aggregation.1.p", (1,)),
    ("cosplace-r50-2048", "aggregation.3.weight", (2048, 2048)),
    ("cosplace-r18-512", "aggregation.3.weight", (512, 512)),
    ("eigenplaces-r101-2048", "backbone.6.22.conv3.weight", (1024, 256, 1, 1)),
    ("mixvpr-r50-4096", "backbone.model.layer3.5.bn3.running_var", (1024,)),
    ("mixvpr-r50-4096", "aggregator.mix.3.mix.1.weight", (400, 400)),
    ("mixvpr-r50-4096", "aggregator.channel_proj.weight", (1024, 1024)),
    ("mixvpr-r50-4096", "aggregator.row_proj.weight", (4, 400)),
    ("salad-dinov2-8448", "backbone.model.pos_embed", (1, 1370, 768)),
    ("salad-dinov2-8448", "backbone.model.mask_token", (1, 768)),
    ("salad-dinov2-8448", "backbone.model.blocks.11.ls2.gamma", (768,)),
    ("salad-dinov2-8448", "aggregator.score.3.weight", (64, 512, 1, 1)),
    ("salad-dinov2-8448", "aggregator.cluster_features.3.weight", (128, 512, 1, 1)),
    ("salad-dinov2-8448", "aggregator.token_features.2.weight", (256, 512)),
    ("salad-dinov2-8448", "aggregator.dust_bin", ()),
    ("boq-r50-16384", "backbone.net.6.5.conv3.weight", (1024, 256, 1, 1)),
    ("boq-r50-16384", "aggregator.proj_c.weight", (512, 1024, 3, 3)),
    ("boq-r50-16384", "aggregator.boqs.1.encoder.self_attn.in_proj_weight", (1536, 512)),
    ("boq-r50-16384", "aggregator.boqs.0.queries", (1, 64, 512)),
    ("boq-r50-16384", "aggregator.fc.weight", (32, 128)),
    ("boq-dinov2-12288", "backbone.dino.norm.weight", (768,)),
    ("boq-dinov2-12288", "aggregator.proj_c.weight", (384, 768, 3, 3)),
    ("boq-dinov2-12288", "aggregator.boqs.0.cross_attn.out_proj.weight", (384, 384)),
    ("megaloc-dinov2-8448", "backbone.blocks.0.attn.qkv.weight", (2304, 768)),
    ("megaloc-dinov2-8448", "aggregator.agg.cluster_features.3.weight", (256, 512, 1, 1)),
    ("megaloc-dinov2-8448", "aggregator.linear.weight", (8448, 16640)),
])
def test_official_keys_by_hand(preset, key, shape):
    assert _meta_layout(preset)[key] == shape


def test_megaloc_has_no_mask_token_and_salad_does():
    assert not any("mask_token" in k for k in _meta_layout("megaloc-dinov2-8448"))
    assert "backbone.model.mask_token" in _meta_layout("salad-dinov2-8448")


# ---- forward contract ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PUBLISHED_PRESETS))
def test_forward_shape_and_unit_norm_on_real_images(preset, corridor_batches):
    descriptor = _random(preset)
    want_dim = int(preset.rsplit("-", 1)[1])
    assert descriptor.dim == want_dim
    out = descriptor.describe(corridor_batches(descriptor.input_size)[:2])
    assert out.shape == (2, want_dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[0], out[1])  # the images differ, and so do their descriptors


@pytest.mark.slow
def test_batch_of_one_equals_batch_member(corridor_batches):
    descriptor = _random("salad-dinov2-8448")
    batch = corridor_batches(descriptor.input_size)
    np.testing.assert_allclose(descriptor.describe(batch[1:2])[0], descriptor.describe(batch)[1], atol=1e-5)


def test_preprocessing_is_part_of_the_preset():
    conf = PUBLISHED_PRESETS
    assert conf["mixvpr-r50-4096"]["input_size"] == (320, 320)
    assert conf["salad-dinov2-8448"]["input_size"] == (322, 322)
    assert conf["boq-r50-16384"]["input_size"] == (384, 384)
    assert all(c["mean"] == (0.485, 0.456, 0.406) and c["std"] == (0.229, 0.224, 0.225) for c in conf.values())
    d = _random("cosplace-r18-512")
    images = torch.rand(1, 3, 480, 640)
    normalised = (images - torch.tensor(d.conf["mean"]).view(1, 3, 1, 1)) / torch.tensor(d.conf["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(d(images), d.net(normalised), atol=1e-6)


def test_input_sizes_the_architecture_cannot_take_are_refused_at_construction():
    with pytest.raises(ValueError, match="320x320"):
        GlobalDescriptor("mixvpr-r50-4096", random_weights=True, input_size=(640, 480))
    for size in ((320, 320), (112, 112)):  # not multiples of 14; too few patches for 64 clusters
        with pytest.raises(ValueError, match="multiples of 14 pixels and more than 64 patches"):
            GlobalDescriptor("salad-dinov2-8448", random_weights=True, input_size=size)
    wide = GlobalDescriptor("megaloc-dinov2-8448", random_weights=True, input_size=(448, 336))  # any multiple
    assert wide.describe(torch.rand(1, 3, 336, 448)).shape == (1, 8448)


def test_vit_refuses_images_that_are_not_patch_multiples():
    descriptor = _random("salad-dinov2-8448")
    with pytest.raises(ValueError, match="multiple of 14"):
        descriptor.describe(torch.rand(1, 3, 320, 320))


# ---- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset", FAMILIES)
def test_state_dict_round_trip_through_a_checkpoint_file(preset, tmp_path, corridor_batches):
    source = _random(preset, seed=3)
    path = tmp_path / "weights.pth"
    torch.save(source.net.state_dict(), path)
    loaded = GlobalDescriptor(preset, checkpoint=str(path))
    assert loaded.fingerprint() == source.fingerprint() != _random(preset).fingerprint()
    images = corridor_batches(source.input_size)[:1]
    np.testing.assert_array_equal(loaded.describe(images), source.describe(images))


def test_wrapped_prefixed_and_safetensors_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    source = _random("cosplace-r18-512", seed=5)
    state = source.net.state_dict()
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": state, "optimizer_states": []}, lightning)
    parallel = tmp_path / "parallel.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, parallel)
    safe = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    for path in (lightning, parallel, safe):
        assert GlobalDescriptor("cosplace-r18-512", checkpoint=str(path)).fingerprint() == source.fingerprint()


@pytest.mark.slow
def test_megaloc_first_release_layout_is_renamed(tmp_path):
    source = _random("megaloc-dinov2-8448", seed=2)
    state = source.net.state_dict()
    v1 = {k.replace("backbone.", "backbone.model.", 1): v for k, v in state.items()}
    v1["backbone.model.mask_token"] = torch.zeros(1, 768)
    assert set(v1) == set(_official_layout("megaloc-dinov2-8448@v1"))
    path = tmp_path / "megaloc.torch"
    torch.save(v1, path)
    assert GlobalDescriptor("megaloc-dinov2-8448", checkpoint=str(path)).fingerprint() == source.fingerprint()


def test_a_preset_without_checkpoint_says_what_to_pass():
    with pytest.raises(ValueError, match=r"needs a checkpoint.*dino_salad\.ckpt.*never downloads"):
        GlobalDescriptor("salad-dinov2-8448")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GlobalDescriptor("salad-dinov2-8448", checkpoint="/nonexistent/dino_salad.ckpt")
    assert RELEASED_FILES["cosplace-r50-2048"] == "ResNet50_2048_cosplace.pth"


def _refusal(saved_preset: str, loaded_preset: str, folder: Path) -> str:
    """The error of loading a checkpoint of `saved_preset`'s architecture into `loaded_preset`."""
    path = folder / "weights.pth"
    torch.save(_random(saved_preset).net.state_dict(), path)
    with pytest.raises(CheckpointError) as error:
        GlobalDescriptor(loaded_preset, checkpoint=str(path))
    return str(error.value)


def test_a_checkpoint_of_another_dimension_names_keys_shapes_and_fitting_presets(tmp_path):
    message = _refusal("cosplace-r50-512", "cosplace-r50-2048", tmp_path)
    assert "aggregation.3.weight: expected (2048, 2048), found (512, 2048)" in message
    assert "cosplace-r50-512" in message and "eigenplaces-r50-512" in message  # one network, two trainings


def test_a_checkpoint_of_another_model_names_missing_and_unexpected_keys(tmp_path):
    message = _refusal("boq-r50-16384", "mixvpr-r50-4096", tmp_path)
    assert "missing key(s): backbone.model.conv1.weight" in message
    assert "unexpected key(s): backbone.net.0.weight" in message
    assert "fits preset(s) boq-r50-16384" in message


def test_checkpoints_never_unpickle_code(tmp_path):
    path = tmp_path / "training.ckpt"
    torch.save({"state_dict": _random("cosplace-r18-512").net.state_dict(),
                "hyper_parameters": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*weights_only=True and never unpickles"):
        read_state_dict(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        read_state_dict(garbage)
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        read_state_dict(empty)


# ---- ONNX ----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset", FAMILIES)
def test_onnx_export_agrees_with_torch_on_real_images(preset, tmp_path, corridor_batches):
    from vpr_ros.core.runtime.backends import OnnxRuntimeBackend
    from vpr_ros.core.runtime.export import export_onnx, read_export_metadata

    descriptor = _random(preset)
    path = export_onnx(descriptor, tmp_path / "descriptor.onnx")
    assert read_export_metadata(path)["dim"] == descriptor.dim
    backend = OnnxRuntimeBackend(path, descriptor.fingerprint())
    images = corridor_batches(descriptor.input_size)  # batch 3: the export traced batch 2, so the batch is dynamic
    got, want = backend.describe(images), descriptor.describe(images)
    assert got.shape == want.shape == (3, descriptor.dim)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-3
    assert np.abs(got - want).max() < 1e-3


# ---- maps and tools ------------------------------------------------------------------------------

@pytest.fixture
def cosplace_checkpoint(tmp_path):
    path = tmp_path / "weights" / "ResNet18_512_cosplace.pth"
    path.parent.mkdir()
    torch.save(_random("cosplace-r18-512", seed=1).net.state_dict(), path)
    return path


def _subset(corridor_dir: Path, folder: Path, queries: int = 12) -> Path:
    """A small Corridor: the first `queries` queries and the references they match."""
    rows = (corridor_dir / "ground_truth.csv").read_text().splitlines()
    keep = rows[1:queries + 1]
    refs = sorted({r for row in keep for r in row.split(",")[1].split()})
    for name in [row.split(",")[0] for row in keep] + refs:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(corridor_dir / name)
    (folder / "ground_truth.csv").write_text("\n".join(rows[:1] + keep) + "\n")
    return folder


def test_map_of_a_published_model_records_and_checks_its_checkpoint(tmp_path, cosplace_checkpoint, corridor_dir):
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map

    refs = sorted((corridor_dir / "ref").glob("*.jpg"))[:8]
    frames = FrameTable.build(np.arange(len(refs), dtype=np.int64), [str(p) for p in refs])
    vpr_map = build_map("c8", frames, lambda source: read_image(Path(source)), "cosplace-r18-512",
                        progress=False, checkpoint=str(cosplace_checkpoint))
    path = vpr_map.save(tmp_path / "map")
    assert json.loads((path / "map.json").read_text())["preset_conf"]["checkpoint"] == str(cosplace_checkpoint)
    loaded = VPRMap.load(path)
    assert loaded.descriptor.fingerprint() == vpr_map.descriptor.fingerprint()
    assert search(loaded, [read_image(refs[3])], 1).ids[0, 0] == 3

    moved = tmp_path / "elsewhere.pth"
    cosplace_checkpoint.rename(moved)
    with pytest.raises(MapError, match="does not exist.*pass the weights file as checkpoint"):
        VPRMap.load(path)
    assert VPRMap.load(path, checkpoint=moved).descriptor.fingerprint() == vpr_map.descriptor.fingerprint()

    other = tmp_path / "other.pth"
    torch.save(_random("cosplace-r18-512", seed=9).net.state_dict(), other)
    with pytest.raises(MapError, match="another fingerprint"):
        VPRMap.load(path, checkpoint=other)


def test_a_checkpoint_for_a_map_of_an_own_preset_is_refused(tmp_path, corridor_dir):
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map

    refs = sorted((corridor_dir / "ref").glob("*.jpg"))[:20]
    frames = FrameTable.build(np.arange(len(refs), dtype=np.int64), [str(p) for p in refs])
    path = build_map("c20", frames, lambda s: read_image(Path(s)), "default", progress=False,
                     clusters=8, input_size=(160, 128)).save(tmp_path / "map")
    with pytest.raises(MapError, match="takes no checkpoint"):
        VPRMap.load(path, checkpoint=tmp_path / "weights.pth")


@pytest.mark.slow
def test_vpr_eval_measures_a_published_model_from_its_checkpoint(tmp_path, cosplace_checkpoint, corridor_dir, capsys):
    from vpr_ros.tools.eval import main

    dataset = _subset(corridor_dir, tmp_path / "corridor12")
    report = tmp_path / "report.json"
    assert main(["--dataset", str(dataset), "--preset", "cosplace-r18-512", "--checkpoint",
                 str(cosplace_checkpoint), "--quiet", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["preset"] == "cosplace-r18-512" and result["descriptor_dim"] == 512
    assert result["num_queries"] == 12 and 0.0 <= result["recall"]["1"] <= 1.0
    assert main(["--dataset", str(dataset), "--preset", "cosplace-r18-512", "--quiet"]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err
