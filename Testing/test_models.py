"""TorchScript export, the manifest and verified loading of the bundled weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from AneurysmSegLib.core import manifest as manifest_mod
from AneurysmSegLib.core import models
from AneurysmSegLib.core.errors import InputError, ModelError
from AneurysmSegLib.networks import DeepMedic, SEUNet3D

torch.set_num_threads(1)


def _export(model_dir: Path) -> tuple[DeepMedic, SEUNet3D]:
    torch.manual_seed(0)
    coarse = DeepMedic(widths=(2,) * 8, fc_widths=(4,))
    fine = SEUNet3D(in_channels=2, base_filters=2, depth=3)
    coarse.train()
    sha_c = models.export_torchscript(coarse, torch.randn(1, 1, 57, 57, 57), model_dir / "coarse.pt")
    assert coarse.training  # the caller's mode is restored
    sha_f = models.export_torchscript(fine, torch.randn(1, 2, 16, 16, 16), model_dir / "fine.pt", method="trace")
    assert sha_c == manifest_mod.sha256_file(model_dir / "coarse.pt")
    models.write_manifest(
        model_dir,
        coarse={"file": "coarse.pt", "spacing_mm": 0.7, "in_channels": 1, "segment_out": 45,
                "architecture": coarse.hyperparameters()},
        fine={"file": "fine.pt", "spacing_mm": [0.4, 0.4, 0.4], "in_channels": 2, "architecture": fine.hyperparameters()},
        training={"data": "unit test", "seed": 0},
        metrics={"dsc": 0.0},
    )
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["fine"]["sha256"] == sha_f
    return coarse, fine


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DeepMedic, SEUNet3D]:
    """Export once per module (scripting is the slow part); tests get a private copy."""
    d = tmp_path_factory.mktemp("exported") / "Models"
    coarse, fine = _export(d)
    return d, coarse, fine


@pytest.fixture
def model_dir(exported: tuple[Path, DeepMedic, SEUNet3D], tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported[0], tmp_path / "Models"))


def test_manifest_contents(model_dir: Path) -> None:
    m = json.loads((model_dir / "manifest.json").read_text())
    assert m["format_version"] == manifest_mod.FORMAT_VERSION
    assert m["coarse"]["context"] == 48 and m["coarse"]["segment_out"] == 45
    assert m["fine"]["voi_size"] == 64
    assert m["coarse"]["size_bytes"] == (model_dir / "coarse.pt").stat().st_size
    assert m["coarse"]["architecture"]["widths"] == [2] * 8
    assert m["training"]["seed"] == 0 and "validation_metrics" in m


def test_load_models_reproduces_eager(exported: tuple[Path, DeepMedic, SEUNet3D], model_dir: Path) -> None:
    _, coarse, fine = exported
    loaded = models.load_models(model_dir, device="cpu")
    assert loaded.device == torch.device("cpu")
    assert loaded.coarse_spacing == (0.7, 0.7, 0.7) and loaded.fine_spacing == (0.4, 0.4, 0.4)
    assert loaded.voi_size == 64 and loaded.fine_channels == 2 and loaded.coarse_context == 48
    assert loaded.coarse_segment_out == 45
    xc, xf = torch.randn(1, 1, 60, 63, 57), torch.randn(2, 2, 64, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.coarse(xc), coarse.eval()(xc), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.fine(xf), fine.eval()(xf), atol=1e-5, rtol=1e-5)
    assert not loaded.coarse.training


def test_corrupted_file_is_refused(model_dir: Path) -> None:
    path = model_dir / "fine.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256") as info:
        models.load_models(model_dir, device="cpu")
    assert "fine.pt" in str(info.value) and "corrupted" in str(info.value)


def test_corruption_after_a_successful_load_is_still_caught(model_dir: Path) -> None:
    models.load_models(model_dir, device="cpu")  # fills the per-process verification cache
    path = model_dir / "coarse.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # same size; the mtime changes
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        models.load_models(model_dir, device="cpu")


def test_missing_file_manifest_and_folder(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "coarse.pt").unlink()
    with pytest.raises(ModelError, match=r"coarse\.pt is missing.*aneurysmseg export"):
        models.load_models(model_dir, device="cpu")
    (model_dir / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest.json is missing"):
        models.load_models(model_dir, device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        models.load_models(tmp_path / "nowhere", device="cpu")


def test_unloadable_torchscript_with_matching_sha_is_refused(model_dir: Path) -> None:
    (model_dir / "fine.pt").write_bytes(b"not a torchscript archive")
    m = json.loads((model_dir / "manifest.json").read_text())
    m["fine"]["sha256"] = manifest_mod.sha256_file(model_dir / "fine.pt")
    (model_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="not loadable TorchScript"):
        models.load_models(model_dir, device="cpu")


def test_malformed_manifest(model_dir: Path) -> None:
    (model_dir / "manifest.json").write_text("{ not json")
    with pytest.raises(ModelError, match="cannot be read"):
        models.read_manifest(model_dir)
    (model_dir / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelError, match="format_version"):
        models.read_manifest(model_dir)


def test_export_refuses_a_model_that_scripting_changes(tmp_path: Path) -> None:
    class Unstable(torch.nn.Module):
        """Eager output differs between calls, so the saved file cannot reproduce it."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand_like(x)

    with pytest.raises(ModelError, match="does not reproduce"):
        models.export_torchscript(Unstable(), torch.zeros(2, 3), tmp_path / "u.pt")
    assert not (tmp_path / "u.pt").exists() and list(tmp_path.iterdir()) == []


def test_resolve_device_and_default_dir() -> None:
    assert models.resolve_device("cpu") == torch.device("cpu")
    assert models.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        models.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            models.resolve_device("cuda")
    d = manifest_mod.default_model_dir()
    assert d.parts[-3:] == ("AneurysmSeg", "Resources", "Models")
