"""Shapes, dense-inference consistency, TorchScript equivalence and trainability of the networks."""

from __future__ import annotations

import pytest
import torch
from AneurysmSegLib.networks import DeepMedic, SEBlock3D, SEUNet3D
from AneurysmSegLib.networks.blocks import Conv1x1, NormAct, residual_add
from torch.nn import functional as F

torch.set_num_threads(1)

TINY_DM = dict(widths=(3, 3, 4, 4, 4, 4, 5, 5), fc_widths=(6, 6))


def tiny_deepmedic(**kw) -> DeepMedic:
    torch.manual_seed(0)
    return DeepMedic(**{**TINY_DM, **kw})


def test_deepmedic_paper_segment_25_to_9() -> None:
    torch.manual_seed(0)
    model = DeepMedic().eval()  # the paper's widths
    with torch.no_grad():
        out = model(torch.randn(2, 1, 57, 57, 57))
    assert out.shape == (2, 2, 9, 9, 9)
    # the normal pathway sees the centre 25^3, the subsampled one 57^3 pooled to 19^3
    assert DeepMedic.output_size(57) == 9 and DeepMedic.input_size(9) == 57
    assert model.hyperparameters()["widths"] == [30, 30, 40, 40, 40, 40, 50, 50]


def test_deepmedic_dense_105_to_57_and_non_cubic() -> None:
    model = tiny_deepmedic(in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 105, 105, 105)).shape == (1, 3, 57, 57, 57)
        assert model(torch.randn(1, 1, 51, 54, 60)).shape == (1, 3, 3, 6, 12)
    assert DeepMedic.output_size((105, 51, 60)) == (57, 3, 12)
    with pytest.raises(ValueError):
        DeepMedic.output_size(58)  # output 10 is not a multiple of 3
    with pytest.raises(ValueError):
        DeepMedic.input_size(0)


def test_deepmedic_tiles_agree_with_one_large_segment() -> None:
    """Tiles whose origins differ by a multiple of 3 reproduce the large segment exactly."""
    model = tiny_deepmedic().eval()
    torch.manual_seed(1)
    x = torch.randn(1, 1, 63, 63, 63)
    with torch.no_grad():
        full = model(x)  # 15^3
        a = model(x[:, :, :57, :57, :57])  # output voxels 0..8
        b = model(x[:, :, 6:, 6:, 6:])  # output voxels 6..14
    assert full.shape[-1] == 15
    torch.testing.assert_close(a, full[:, :, :9, :9, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b, full[:, :, 6:, 6:, 6:], atol=1e-5, rtol=1e-5)


def test_deepmedic_subsampled_pathway_matters() -> None:
    """Changing voxels only the subsampled pathway sees (outside the centre crop) changes the output."""
    model = tiny_deepmedic().eval()
    x = torch.randn(1, 1, 57, 57, 57)
    y = x.clone()
    y[:, :, :8] += 5.0  # outside the normal pathway's centre 25^3
    with torch.no_grad():
        assert (model(x) - model(y)).abs().max() > 1e-4


def test_deepmedic_receptive_field() -> None:
    """Output block 0..2 (first axis) sees input 0..50 (17 pooled voxels) and nothing beyond."""
    model = tiny_deepmedic().eval()
    x = torch.randn(1, 1, 57, 57, 57)
    far, near = x.clone(), x.clone()
    far[:, :, 51:] += 10.0
    near[:, :, 50] += 10.0
    with torch.no_grad():
        base, a, b = model(x), model(far), model(near)
    torch.testing.assert_close(a[:, :, :3], base[:, :, :3])
    assert (b[:, :, :3] - base[:, :, :3]).abs().max() > 1e-4
    assert DeepMedic.receptive_field_subsampled == 51 and DeepMedic.receptive_field_normal == 17


def test_residual_add_pads_channels_and_crops() -> None:
    x = torch.ones(1, 4, 5, 5, 5)
    shortcut = torch.arange(3 * 9**3, dtype=torch.float32).reshape(1, 3, 9, 9, 9)
    y = residual_add(x, shortcut)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, :3], 1 + shortcut[:, :, 2:7, 2:7, 2:7])
    torch.testing.assert_close(y[:, 3], torch.ones(1, 5, 5, 5))


@pytest.mark.parametrize("make", [lambda s: DeepMedic(**TINY_DM, seed=s), lambda s: SEUNet3D(base_filters=2, seed=s)])
def test_seeded_init_is_deterministic(make) -> None:
    torch.manual_seed(123)
    a = make(7).state_dict()
    torch.manual_seed(456)  # the global RNG must not matter
    b = make(7).state_dict()
    c = make(8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_fast_blocks_match_their_reference_layers() -> None:
    """Conv1x1 (GEMM) equals nn.Conv3d(k=1); NormAct's GroupNorm(C, C) equals InstanceNorm3d."""
    torch.manual_seed(0)
    fast = Conv1x1(5, 3)
    ref = torch.nn.Conv3d(5, 3, 1)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5, 4, 6, 7).transpose(2, 4)  # non-contiguous input too
    torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)
    na = NormAct(4)
    with torch.no_grad():
        na.norm.weight.uniform_(0.5, 2.0)
        na.norm.bias.uniform_(-1.0, 1.0)
    inorm = torch.nn.InstanceNorm3d(4, affine=True)
    inorm.load_state_dict(na.norm.state_dict())
    x = torch.randn(2, 4, 5, 5, 5) * 3 + 1
    torch.testing.assert_close(na(x), F.leaky_relu(inorm(x), 1e-2), atol=1e-5, rtol=1e-5)


def test_deepmedic_residual_option_changes_the_network() -> None:
    x = torch.randn(1, 1, 57, 57, 57)
    with torch.no_grad():
        a = tiny_deepmedic(residual=True).eval()(x)
        b = tiny_deepmedic(residual=False).eval()(x)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("in_channels", [1, 2])
def test_se_unet_64_to_64(in_channels: int) -> None:
    torch.manual_seed(0)
    model = SEUNet3D(in_channels=in_channels, base_filters=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 64, 64, 64))
    assert out.shape == (1, 1, 64, 64, 64)
    assert torch.isfinite(out).all()


def test_se_unet_rejects_sizes_not_divisible_by_16() -> None:
    model = SEUNet3D(in_channels=1, base_filters=2).eval()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 64, 64, 56))
    with pytest.raises(Exception, match="divisible"):
        torch.jit.script(model)(torch.randn(1, 1, 24, 32, 32))


def test_se_unet_se_positions_and_widths() -> None:
    model = SEUNet3D(base_filters=4)
    se = [m for m in model.modules() if isinstance(m, SEBlock3D)]
    assert len(se) == 2
    # penultimate context block (level 3: 32 channels) and first upsampling block (256->... 32 channels)
    assert model.encoder[3].se.fc1.in_features == 32
    assert model.decoder[0].up.se.fc1.in_features == 32
    assert model.encoder[4].conv.out_channels == 64  # 4, 8, 16, 32, 64
    none = SEUNet3D(base_filters=4, se_positions=())
    assert not any(isinstance(m, SEBlock3D) for m in none.modules())
    with pytest.raises(ValueError):
        SEUNet3D(se_positions=("bottleneck",))


def test_se_unet_max_filters_caps_widths() -> None:
    capped = SEUNet3D(in_channels=1, base_filters=2, max_filters=8).eval()
    assert [lvl.conv.out_channels for lvl in capped.encoder] == [2, 4, 8, 8, 8]
    full = SEUNet3D(in_channels=1, base_filters=2)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(capped) < n(full)
    with torch.no_grad():
        assert capped(torch.randn(1, 1, 32, 32, 32)).shape == (1, 1, 32, 32, 32)


def test_se_unet_deep_supervision_adds_segmentation_layers() -> None:
    def heads(model: SEUNet3D) -> int:
        return sum(1 for d in model.decoder if d.has_head)

    assert heads(SEUNet3D(base_filters=2, deep_supervision=True)) == 3
    assert heads(SEUNet3D(base_filters=2, deep_supervision=False)) == 1


def test_se_block_scale_in_unit_interval() -> None:
    torch.manual_seed(0)
    se = SEBlock3D(16, reduction=16)  # max(1, 16 // 16) = 1 hidden unit still works
    x = torch.randn(3, 16, 4, 4, 4) * 10
    w = se.weights(x)
    assert w.shape == (3, 16, 1, 1, 1)
    assert (w > 0).all() and (w < 1).all()
    torch.testing.assert_close(se(x), x * w)


def test_torchscript_equals_eager_both_networks() -> None:
    dm = tiny_deepmedic().eval()
    unet = SEUNet3D(in_channels=2, base_filters=2, depth=4).eval()
    xd = torch.randn(1, 1, 60, 57, 57)
    xu = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        for model, x in ((dm, xd), (unet, xu)):
            eager = model(x)
            torch.testing.assert_close(torch.jit.script(model)(x), eager, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(torch.jit.trace(model, x)(x), eager, atol=1e-5, rtol=1e-5)


def _blob(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright noisy sphere whose voxels are the foreground."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float32) - size / 2 + 0.5
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
    mask = (zz**2 + yy**2 + xx**2) < (size / 4) ** 2
    img = mask.float() * 2 + 0.3 * torch.randn(size, size, size, generator=g)
    return img[None, None], mask[None, None].float()


def test_deepmedic_training_steps_lower_the_loss() -> None:
    model = tiny_deepmedic(dropout=0.0)
    img, mask = _blob(57, 0)
    target = mask[:, 0, 24:-24, 24:-24, 24:-24].long()  # output region 9^3 (the blob's centre and edge)
    img2, mask2 = _blob(57, 1)
    img2 = torch.roll(img2, 10, dims=2)  # a second sample with more background in the output
    target2 = torch.roll(mask2, 10, dims=2)[:, 0, 24:-24, 24:-24, 24:-24].long()
    x, y = torch.cat([img, img2]), torch.cat([target, target2])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_se_unet_training_steps_with_wdl_lower_the_dice_loss() -> None:
    """Train with WDL (beta = 1); judge by the soft Dice loss, since the WDL *value* is not monotonic
    in the overlap (see losses.py)."""
    from AneurysmSegLib.training.losses import WeightedDiceLoss, soft_dice_loss

    torch.manual_seed(0)
    model = SEUNet3D(in_channels=1, base_filters=2, depth=3, dropout=0.0)
    img, mask = _blob(16, 0)
    loss_fn = WeightedDiceLoss(beta=1.0, logits=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.no_grad():
        before = soft_dice_loss(torch.sigmoid(model(img)), mask).item()
    for _ in range(25):
        opt.zero_grad()
        loss_fn(model(img), mask).backward()
        opt.step()
    with torch.no_grad():
        after = soft_dice_loss(torch.sigmoid(model(img)), mask).item()
    assert after < before - 0.3
    assert after < -0.7  # soft Dice above 0.7
