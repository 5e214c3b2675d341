"""Every registered model on every registered backbone: forward, embeddings, backward; the registry; the
input normalisation and its record in the config."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reidx.checkpoint import save_checkpoint
from reidx.data.registry import dataset_names, get_reader
from reidx.errors import ReidxError
from reidx.models import ReidModel, build_model, complete_config, list_models, model_class, model_options
from reidx.models.backbones import Backbone, build_backbone, list_backbones
from reidx.models.cadnet import fuse
from reidx.models.image_discriminators import build_image_discriminator, list_image_discriminators
from reidx.models.loading import load_model


def small_model(name: str, arch: str = "resnet18", **options) -> ReidModel:
    """The tiny instance of model ``name`` (the options its class gives for tests)."""
    return build_model(name, num_classes=5, arch=arch, **{**model_class(name).tiny, **options})


@pytest.mark.parametrize(
    ("names", "build", "kind"),
    [
        (list_models(), lambda name: model_class(name), "model"),
        (list_backbones(), build_backbone, "architecture"),
        (list_image_discriminators(), lambda name: build_image_discriminator(name, width=8), "image discriminator"),
        (dataset_names(), get_reader, "dataset"),
    ],
)
def test_registries_stamp_the_name_and_refuse_an_unknown_one_in_one_line(names: list[str], build, kind: str) -> None:
    """Every entry knows its registered name (it never repeats it); an unknown name lists the known ones."""
    assert names and names == sorted(names)
    for name in names:
        assert build(name).name == name
    with pytest.raises(ReidxError, match=f"unknown {kind} 'nope' — use one of {', '.join(names)}$"):
        build("nope")


def test_a_model_saves_its_registered_name_in_its_config() -> None:
    for name in list_models():
        assert small_model(name).config["name"] == name


@pytest.mark.parametrize("kind", list_image_discriminators())
def test_every_image_discriminator_judges_an_image_batch(kind: str) -> None:
    judged = build_image_discriminator(kind, width=8)(torch.zeros(2, 3, 64, 32))
    assert judged.shape[0] == 2 and judged.ndim == 2


def test_model_options_are_the_builders_keywords() -> None:
    """The trainer passes a model only the options its builder takes."""
    assert set(model_options("baseline")) == {
        "num_classes",
        "arch",
        "pretrained",
        "input_norm",
        "bnneck",
        "last_stride",
    }
    cadnet = model_options("cadnet")
    assert cadnet["decoder_skips"] == 4 and cadnet["image_discriminator"] == "patchgan"
    assert cadnet["num_classes"] is inspect.Parameter.empty
    assert model_class("cadnet").can_recover and not model_class("baseline").can_recover


@pytest.mark.parametrize("arch", list_backbones())
@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_on_every_backbone(name: str, arch: str) -> None:
    """Forward (the keys the losses use), every embedding mode, and one backward reaching the trunk."""
    torch.manual_seed(0)
    model = small_model(name, arch)
    assert isinstance(model, ReidModel) and isinstance(model.encoder, Backbone)
    assert model.config["input_norm"] == "none" and model.imagenet_loads() == {}
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    out = model(images)
    dim = model.encoder.out_channels
    assert out["f"].shape[:2] == (2, dim) and out["logits"].shape == (2, 5)
    assert out["pooled"].shape == out["embedding"].shape == (2, model.classifier.fc.in_features)
    if model.can_recover:
        assert out["recovered"].shape == images.shape and out["g"].shape == out["f"].shape
    loss = out["logits"].sum() + out["pooled"].square().mean() + out.get("recovered", images).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    model.eval()
    for mode in model.embedding_modes:
        embedding = model.embed(images, mode)
        assert embedding.shape[0] == 2 and torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("arch", list_backbones())
def test_backbones_give_five_features_at_strides_2_to_32(arch: str) -> None:
    trunk = build_backbone(arch).eval()
    with torch.no_grad():
        features = trunk(torch.zeros(1, 3, 64, 32))
    strides = (2, 4, 8, 16, 32)
    expected = [(c, 64 // stride, 32 // stride) for c, stride in zip(trunk.channels, strides, strict=True)]
    assert [tuple(f.shape[1:]) for f in features] == expected


def test_imagenet_input_norm_converts_minus_one_one_to_imagenet_statistics() -> None:
    """An ``imagenet`` trunk sees ((x + 1) / 2 - mean) / std; the conversion is not saved in the weights."""
    torch.manual_seed(0)
    plain = build_backbone("resnet18").eval()
    converting = build_backbone("resnet18", input_norm="imagenet").eval()
    assert converting.state_dict().keys() == plain.state_dict().keys()
    converting.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = plain(((images + 1) / 2 - mean) / std)[-1]
        assert torch.allclose(converting(images)[-1], expected, atol=1e-5)
        assert not torch.allclose(plain(images)[-1], expected, atol=1e-3)


def test_input_norm_is_saved_and_rebuilt_and_older_checkpoints_mean_none(tmp_path: Path) -> None:
    model = small_model("cadnet", input_norm="imagenet")
    assert model.encoder.input_norm == model.hr_encoder.input_norm == "imagenet"
    assert model.image_discriminator.__class__.__name__ == "PatchDiscriminator"
    save_checkpoint(tmp_path / "new.pt", model, (64, 32))
    loaded = load_model(tmp_path / "new.pt")
    assert loaded.model.config["input_norm"] == "imagenet" and loaded.model.encoder.input_norm == "imagenet"

    old = small_model("baseline")
    save_checkpoint(tmp_path / "old.pt", old, (64, 32))
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    for key in ("input_norm", "bnneck", "last_stride"):
        del state["model_config"][key]  # written before the keys existed
    torch.save(state, tmp_path / "old.pt")
    rebuilt = load_model(tmp_path / "old.pt").model
    assert rebuilt.config["input_norm"] == "none" and rebuilt.config == complete_config(state["model_config"])
    assert rebuilt.config["bnneck"] is False and rebuilt.config["last_stride"] == 2
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    assert torch.equal(rebuilt.embed(images), old.eval().embed(images))


@pytest.mark.parametrize("bnneck", [False, True])
@pytest.mark.parametrize("name", list_models())
def test_forward_embedding_is_the_fused_retrieval_embedding(name: str, bnneck: bool) -> None:
    """Validation ranks with ``forward()["embedding"]``; search and report with ``embed()``: they must agree."""
    torch.manual_seed(0)
    model = small_model(name, bnneck=bnneck).eval()
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        embedding = model(images)["embedding"]
    assert torch.allclose(embedding, model.embed(images, "fused"), atol=1e-6)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)


def test_residual_recovery_starts_as_the_input_and_is_saved_in_the_config() -> None:
    """With ``residual_recovery`` G's correction starts at zero: the untrained recovery IS the input."""
    torch.manual_seed(0)
    model = small_model("cadnet", residual_recovery=True).eval()
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    assert torch.equal(model.recover(images), images)
    assert torch.equal(model(images)["recovered"], images)
    assert model.config["residual_recovery"] is True
    plain = small_model("cadnet").eval()
    assert not torch.allclose(plain.recover(images), images, atol=0.1)


@pytest.mark.parametrize("size", [(64, 32), (128, 48), (70, 30)])
def test_cadnet_recovers_at_any_input_size(size: tuple[int, int]) -> None:
    """Sides that are not multiples of 32 (VIPeR's native 128×48) still give an image of the input's size."""
    model = small_model("cadnet").eval()
    images = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        out = model(images)
    assert out["recovered"].shape == images.shape
    assert model.embed(images, "fused").shape == (2, 2 * 512)


def test_resnet18_image_discriminator_is_a_registered_trunk() -> None:
    model = small_model("cadnet", arch="mobilenet_v2", image_discriminator="resnet18")
    trunk = model.image_discriminator.trunk
    assert isinstance(trunk, Backbone) and trunk.name == "resnet18" and trunk.input_norm == "none"
    assert model.image_discriminator(torch.zeros(2, 3, 64, 32)).shape == (2, 1)


def train_classifier_bn(model: ReidModel, images: torch.Tensor) -> None:
    """A few training-mode forwards, so that C's BN has running statistics unlike the identity."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images)
    model.eval()


def bnneck_case(name: str) -> tuple[ReidModel, ReidModel, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """A BNNeck model whose C's BN has statistics, the same weights without BNNeck, images, the BNNeck model's
    forward and its pooled feature after C's BN (eval mode); the logits must come from that BN feature."""
    torch.manual_seed(0)
    model = small_model(name, bnneck=True)
    images = torch.rand(4, 3, 64, 32) * 2 - 1
    train_classifier_bn(model, images)
    plain = small_model(name)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.no_grad():
        out = model(images)
        after_bn = model.classifier.bn(out["pooled"])
    assert torch.allclose(out["logits"], model.classifier.fc(after_bn), atol=1e-5)
    return model, plain, images, out, after_bn


def test_baseline_bnneck_retrieves_with_the_feature_after_the_classifier_bn() -> None:
    """[B] BNNeck: the embedding is the pooled feature (the triplet's) put through C's BN in eval mode; without
    it, the pooled feature itself."""
    model, plain, images, out, after_bn = bnneck_case("baseline")
    assert torch.allclose(model.embed(images), F.normalize(after_bn, dim=1), atol=1e-5)
    assert torch.allclose(plain.embed(images), F.normalize(out["pooled"], dim=1), atol=1e-5)
    assert not torch.allclose(plain.embed(images), model.embed(images), atol=1e-3)


def test_cadnet_bnneck_retrieves_with_each_streams_feature_after_the_classifier_bn() -> None:
    """[B] BNNeck per stream: f and g each through their channels of C's BN, fused after."""
    model, plain, images, out, after_bn = bnneck_case("cadnet")
    f, g = after_bn.split(model.encoder.out_channels, dim=1)
    expected = {"f": F.normalize(f, dim=1), "g": F.normalize(g, dim=1), "fused": fuse(f, g)}
    for mode, wanted in expected.items():
        assert torch.allclose(model.embed(images, mode), wanted, atol=1e-5), mode
    before_bn = out["pooled"][:, : model.encoder.out_channels]
    assert torch.allclose(plain.embed(images, "f"), F.normalize(before_bn, dim=1), atol=1e-5)
    assert not torch.allclose(plain.embed(images, "f"), model.embed(images, "f"), atol=1e-3)


def test_bnneck_forward_moves_the_bn_statistics_once_per_batch() -> None:
    """The BN feature serves both the logits and the embedding: one BN pass per training forward."""
    model = small_model("baseline", bnneck=True).train()
    model(torch.rand(4, 3, 64, 32))
    assert int(model.classifier.bn.num_batches_tracked) == 1


@pytest.mark.parametrize("arch", list_backbones())
def test_last_stride_1_keeps_f5_at_f4s_resolution_with_the_same_weights(arch: str) -> None:
    """[B] last stride 1: f5 at stride 16 (twice the map of stride 32), f1..f4 and every weight unchanged."""
    torch.manual_seed(0)
    usual = build_backbone(arch).eval()
    one = build_backbone(arch, last_stride=1).eval()
    one.load_state_dict(usual.state_dict())  # strictly the same tensors
    images = torch.rand(1, 3, 64, 32) * 2 - 1
    with torch.no_grad():
        a, b = usual(images), one(images)
    assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4], strict=True))
    assert tuple(a[-1].shape[-2:]) == (2, 1) and tuple(b[-1].shape[-2:]) == (4, 2)
    with pytest.raises(ValueError, match="last stride 3"):
        build_backbone(arch, last_stride=3)


def test_last_stride_is_saved_and_cadnet_recovers_with_it(tmp_path: Path) -> None:
    model = small_model("cadnet", last_stride=1, bnneck=True).eval()
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    assert model.recover(images).shape == images.shape
    save_checkpoint(tmp_path / "m.pt", model, (64, 32))
    rebuilt = load_model(tmp_path / "m.pt").model
    assert rebuilt.config["last_stride"] == 1 and rebuilt.config["bnneck"] is True
    assert torch.allclose(rebuilt.embed(images), model.embed(images), atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_a_models_own_options_default_as_its_constructor_does(name: str) -> None:
    """A model's ``Options`` (its ``reidx train`` flags) and its constructor agree on every shared default."""
    parameters = model_options(name)
    for spec in fields(model_class(name).Options):
        assert spec.name not in parameters or parameters[spec.name] == spec.default, spec.name
