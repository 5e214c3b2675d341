"""ImageNet weights load strictly into a trunk, or are refused with one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

from reidx.checkpoint import save_checkpoint
from reidx.errors import ReidxError
from reidx.models import build_model
from reidx.models.backbones import build_backbone

MOBILENET = "mobilenet_v2-b0353104.pth"


def shared_weights(name: str) -> Path | None:
    """``shared/weights/NAME`` beside the repository or above it (never copied into it), else None."""
    for folder in Path(__file__).resolve().parents:
        path = folder / "shared" / "weights" / name
        if path.is_file():
            return path
    return None


def refusal(arch: str, path: Path) -> str:
    with pytest.raises(ReidxError) as caught:
        build_backbone(arch, pretrained=path)
    line = caught.value.line()
    assert "\n" not in line and str(path) in line and "--pretrained PATH" in line
    return line


@pytest.mark.skipif(shared_weights(MOBILENET) is None, reason=f"shared/weights/{MOBILENET} is absent")
def test_torchvision_mobilenet_v2_weights_load_completely() -> None:
    """Every trunk tensor of the 314 in torchvision's file is loaded (the 2 classifier tensors dropped), and
    the trunk computes what torchvision's MobileNetV2 computes on the ImageNet-normalised input."""
    path = shared_weights(MOBILENET)
    state = torch.load(path, weights_only=True)
    assert len(state) == 314
    trunk = build_backbone("mobilenet_v2", pretrained=path, input_norm="imagenet").eval()
    assert (trunk.imagenet.loaded, trunk.imagenet.total, trunk.imagenet.dropped) == (312, 312, 2)
    assert str(trunk.imagenet).startswith("loaded 312 of 312 ImageNet tensors")
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key
    reference = tv_models.mobilenet_v2()
    reference.load_state_dict(state)
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.eval().features(((images + 1) / 2 - mean) / std)
        assert torch.allclose(trunk(images)[-1], expected, atol=1e-5)


@pytest.mark.skipif(shared_weights(MOBILENET) is None, reason=f"shared/weights/{MOBILENET} is absent")
def test_an_imagenet_model_normalises_its_input_and_reports_its_loads() -> None:
    model = build_model("cadnet", num_classes=3, arch="mobilenet_v2", pretrained=shared_weights(MOBILENET))
    assert model.config["input_norm"] == "imagenet"
    assert {trunk: load.loaded for trunk, load in model.imagenet_loads().items()} == {"E": 312, "F": 312}
    with pytest.raises(ReidxError, match="does not fit resnet18: it lacks 100 trunk tensors"):
        build_backbone("resnet18", pretrained=shared_weights(MOBILENET))


def test_the_cache_is_used_and_never_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ReidxError, match="ImageNet weights for resnet18 are not on this machine"):
        build_backbone("resnet18", pretrained=True)
    cached.parent.mkdir(parents=True)
    torch.save(tv_models.resnet18().state_dict(), cached)
    assert build_backbone("resnet18", pretrained=True).imagenet.loaded == 120  # 122 minus fc.weight, fc.bias


def test_a_reidx_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    save_checkpoint(path, build_model("baseline", num_classes=2, arch="resnet18"), (64, 32))
    assert "is a reidx checkpoint, not torchvision's ImageNet weights for resnet18" in refusal("resnet18", path)


def test_weights_of_another_arch_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(tv_models.resnet18().state_dict(), path)
    assert "does not fit resnet34: it lacks 80 trunk tensors (layer1.2.conv1.weight" in refusal("resnet34", path)
    assert "does not fit mobilenet_v2: it lacks" in refusal("mobilenet_v2", path)
    torch.save(tv_models.resnet34().state_dict(), path)
    assert "does not fit resnet18: 96 tensors (layer1.2.conv1.weight" in refusal("resnet18", path)


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    state = tv_models.resnet18().state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    line = refusal("resnet18", path)
    assert "layer2.0.conv1.weight is (128, 64, 1, 1) in the file, (128, 64, 3, 3) in resnet18" in line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot read ImageNet weights"),
        (b"\x00garbage bytes\xff" * 10, "cannot read ImageNet weights"),
        ([1, 2, 3], "is not a state dict of tensors"),
        ({"state_dict": {"conv1.weight": torch.zeros(1)}}, "is not a state dict of tensors"),
        ({}, "is not a state dict of tensors"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert message in refusal("resnet18", path)
    assert not any(tmp_path.glob("*.tmp*"))
