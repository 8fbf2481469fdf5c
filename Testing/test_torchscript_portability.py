"""The bundled TorchScript weights load in the oldest torch the Slicer module asks for.

Slicer 5.8 runs Python 3.9, for which torch 2.8 is the newest release; the module installs torch
through PyTorch Utils with ``>=2.0``. A TorchScript file names every ATen op its code calls, and
torch refuses the whole file when one op is unknown. Scripting ``F.interpolate`` (``nn.Upsample``)
compiles all of its modes into the file, and torch 2.12 added one (lanczos): files exported that way
needed torch >= 2.12 and failed to load in 2.8 ("Unknown builtin op: aten::_upsample_lanczos2d_aa").

``OPS_LOADED_BY_TORCH_2_0`` lists the ops of the bundled files that were loaded and run with torch
2.0.0, 2.8.0 and 1.13.1 (CUDA wheels from PyPI on the 2-core machine; outputs equal to torch 2.13's
within 5e-6, and the whole pipeline on the sample with torch 2.0.0 gave the same labels). The vessel
file's ``max_pool3d`` joined on 2026-11-30: the file loaded in torch 2.0.0 and 2.8.0 under Python 3.9.18
with outputs equal to torch 2.13's (max difference 0), and ``aneurysmseg segment`` on the sample under
Python 3.9 with either gave the labels of Python 3.11 with torch 2.13, voxel for voxel. A new op in an
exported file has to be checked the same way before it is added here.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from AneurysmSegLib.networks import DeepMedic, SEUNet3D  # noqa: E402
from AneurysmSegLib.networks.vessel_unet import VesselUNet  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "AneurysmSeg" / "Resources" / "Models"

OPS_LOADED_BY_TORCH_2_0 = frozenset(
    "__is__ add add_ append avg_pool3d baddbmm batch_norm bmm cat conv3d dim dropout dropout_ eq expand floordiv "
    "format group_norm gt le leaky_relu leaky_relu_ len linear list lt max_pool3d mean mul ne neg prelu relu remainder reshape "
    "sigmoid size slice sub unsqueeze upsample_nearest3d upsample_trilinear3d zeros".split())

_OP = re.compile(r"\btorch\.([A-Za-z_][A-Za-z_0-9]*)\(")


def opsInTorchScript(path: Path) -> set[str]:
    """``torch.<op>(...)`` calls in the serialized code of a TorchScript file."""
    ops: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/code/" in name and name.endswith(".py"):
                ops |= set(_OP.findall(archive.read(name).decode("utf-8")))
    return ops


@pytest.mark.parametrize("name", ["coarse_deepmedic.pt", "fine_se_unet.pt", "vessels_unet.pt"])
def test_bundled_weights_use_only_ops_that_torch_2_0_loads(name):
    ops = opsInTorchScript(MODELS / name)
    assert ops, "no ops found: the TorchScript layout changed, update opsInTorchScript"
    assert ops <= OPS_LOADED_BY_TORCH_2_0, f"ops not checked with torch 2.0: {sorted(ops - OPS_LOADED_BY_TORCH_2_0)}"


def test_freshly_scripted_networks_stay_loadable_by_torch_2_0(tmp_path):
    """What `aneurysmseg export` would write from these network definitions (small widths)."""
    models = {"deepmedic.pt": DeepMedic(widths=[4] * 8, sub_widths=[4] * 8, fc_widths=[6, 6], seed=0),
              "seunet.pt": SEUNet3D(in_channels=2, base_filters=4, depth=3, seed=0),
              "vessels.pt": VesselUNet(in_channels=3, widths=(4, 8, 8), seed=0)}
    for name, model in models.items():
        torch.jit.save(torch.jit.script(model.eval()), str(tmp_path / name))
        ops = opsInTorchScript(tmp_path / name)
        assert "upsample_nearest3d" in ops
        assert ops <= OPS_LOADED_BY_TORCH_2_0, f"{name}: {sorted(ops - OPS_LOADED_BY_TORCH_2_0)}"


def test_upsample3d_equals_interpolate():
    from torch.nn import functional as F

    from AneurysmSegLib.networks.blocks import upsample3d

    x = torch.randn(1, 3, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(upsample3d(x, 3.0), F.interpolate(x, scale_factor=3.0, mode="nearest"))
    assert torch.equal(upsample3d(x, 2.0, "trilinear"),
                       F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False))
    with pytest.raises(ValueError, match="nearest"):
        upsample3d(x, 2.0, "bicubic")
