"""The learnt artery tree: network, slab inference, training (resumable, deterministic), export into a
manifest, the bundled weights, and the half-maximum fallback without a vessel network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from AneurysmSegLib import preprocess as pp
from AneurysmSegLib.core import manifest as manifest_mod
from AneurysmSegLib.core import models
from AneurysmSegLib.core.errors import ModelError
from AneurysmSegLib.networks.vessel_unet import RECEPTIVE_HALF_WIDTH, VesselUNet
from AneurysmSegLib.preprocess.vessels import FEATURES
from AneurysmSegLib.stages.vessels import VesselSegmenter, preprocess_options
from AneurysmSegLib.training import vessels as tv

torch.set_num_threads(1)
BUNDLED = manifest_mod.default_model_dir()


def test_network_shapes_size_and_receptive_field() -> None:
    net = VesselUNet(seed=0).eval()
    assert 10_000 < sum(p.numel() for p in net.parameters()) < 100_000
    x = torch.zeros(1, FEATURES, 48, 48, 48)
    with torch.no_grad():
        assert net(x[:, :, :16, :20, :24]).shape == (1, 1, 16, 20, 24)
        poked = x.clone()
        poked[0, :, 24, 24, 24] = 1.0
        changed = np.argwhere((net(poked) - net(x)).abs()[0, 0].numpy() > 0)
    assert changed.min() >= 24 - RECEPTIVE_HALF_WIDTH and changed.max() <= 24 + RECEPTIVE_HALF_WIDTH
    r = torch.randn(1, FEATURES, 8, 12, 16)  # eval mode runs in place: same values as in training mode
    with torch.inference_mode():
        lean = net(r)
    assert torch.equal(lean, net.train()(r))


def test_slabs_give_the_whole_volume_result_and_nothing_outside_the_region() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(FEATURES, 40, 30, 28)).astype(np.float32)
    f[2] = 0.0
    f[2, 10:30, 8:22, 6:20] = 1.0
    module = torch.jit.script(VesselUNet(seed=1).eval())
    whole = VesselSegmenter(module, slab_voxels=10 ** 9)(f)
    slabs = VesselSegmenter(module, slab_voxels=4 * 30 * 28)(f)
    assert whole.shape == f.shape[1:] and whole.dtype == np.float32
    np.testing.assert_allclose(slabs, whole, atol=1e-5)
    assert whole[:1].max() == 0.0 and whole[10:30, 8:22, 6:20].min() > 0.0  # the box is region + 8 voxels
    with pytest.raises(ValueError, match="features"):
        VesselSegmenter(module)(f[:2])


@pytest.fixture(scope="module")
def vessel_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from AneurysmSegLib.phantom.render import generate_case, write_case

    root = tmp_path_factory.mktemp("vessel_cases")
    for i in range(3):
        write_case(generate_case(40 + i, (64, 64, 40), (1.2, 1.2, 1.2), n_aneurysms=1), root / f"c{i}")
    return root


def _cfg(data: Path, out: Path, stop_at: int, resume: bool = False, **kw) -> tv.VesselTrainConfig:
    kw = {"widths": (2, 4, 4), "val_every": 3, **kw}
    return tv.VesselTrainConfig(data=[str(data)], out=out, cache=out.parent / "cache", steps=4, stop_at=stop_at, batch=2, patch=16,
                                eval_every=2, resume=resume, seed=3, **kw)


def test_training_resumes_exactly_and_exports_into_a_manifest(vessel_cases: Path, tmp_path: Path) -> None:
    straight = tv.train_vessels(_cfg(vessel_cases, tmp_path / "a", 4), log=lambda m: None)
    tv.train_vessels(_cfg(vessel_cases, tmp_path / "b", 2), log=lambda m: None)
    resumed = tv.train_vessels(_cfg(vessel_cases, tmp_path / "b", 4, resume=True), log=lambda m: None)
    assert straight["step"] == resumed["step"] == 4 and straight["val_cases"] == ["c2"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 3  # header + 2 validations
    cached = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 3
    with np.load(cached[0]) as d:
        assert d["x"].shape[1:] == (FEATURES, 16, 16, 16) and d["y"].dtype == np.uint8 and d["y"].max() > 127

    model_dir = Path(shutil.copytree(BUNDLED, tmp_path / "Models"))
    path = tv.export_vessels(tmp_path / "a", model_dir)
    m = manifest_mod.ModelManifest.read(model_dir)
    assert m.vessels["sha256"] == manifest_mod.sha256_file(path) and m.vessels["hyperparameters"]["widths"] == [2, 4, 4]
    assert m.vessel_threshold == straight["best_threshold"] and m.summary()["vessels"]["file"] == path.name
    assert set(straight["input_grid_dice"]) == {str(t) for t in tv.INPUT_GRID_THRESHOLDS}  # chosen on the input grid
    loaded = models.load_models(model_dir, device="cpu")
    eager = VesselUNet(widths=(2, 4, 4), seed=None).eval()
    eager.load_state_dict(torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"])
    x = torch.randn(1, FEATURES, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.vessels(x), eager(x))
    # --init-from a model folder: its weights and widths (lr 0 keeps them through two steps)
    tv.train_vessels(_cfg(vessel_cases, tmp_path / "c", 2, init_from=model_dir, lr=0.0, widths=(8, 16, 16), val_every=0),
                     log=lambda m: None)
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert c["kind"] == "vessels" and c["hyperparameters"]["widths"] == [2, 4, 4]
    assert all(torch.equal(c["model"][k], v) for k, v in eager.state_dict().items())
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        models.load_models(model_dir, device="cpu")


def test_a_manifest_without_a_vessel_network_still_reads_and_falls_back(tmp_path: Path) -> None:
    model_dir = Path(shutil.copytree(BUNDLED, tmp_path / "Models"))
    data = json.loads((model_dir / "manifest.json").read_text())
    data.pop("vessels", None)
    (model_dir / "manifest.json").write_text(json.dumps(data))
    m = manifest_mod.ModelManifest.read(model_dir)
    assert m.vessels is None and m.vessel_threshold == 0.5 and "vessels" not in m.summary()
    loaded = models.load_models(model_dir, device="cpu")
    assert loaded.vessels is None and preprocess_options(loaded) == {}
    data["vessels"] = {"file": "x.pt"}
    (model_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="'vessels' lacks sha256"):
        manifest_mod.ModelManifest.read(model_dir)


def test_bundled_vessel_network_is_recorded_and_checked() -> None:
    m = manifest_mod.ModelManifest.read()
    entry = m.vessels
    assert entry is not None and m.release
    path = BUNDLED / entry["file"]
    assert manifest_mod.sha256_file(path) == entry["sha256"] == manifest_mod.release_record()[entry["file"]]
    assert path.stat().st_size < 400_000  # tiny
    assert entry["spacing_mm"] == list(m.coarse_spacing) and entry["preprocess_version"] == pp.PREPROCESS_VERSION
    assert 0.0 < m.vessel_threshold < 1.0


@pytest.fixture(scope="module")
def small_case():
    from AneurysmSegLib.phantom.render import generate_case

    return generate_case(7, (96, 96, 48), (0.8, 0.8, 0.8))


def test_learnt_tree_is_deterministic_and_the_fallback_is_the_half_maximum_rule(small_case) -> None:
    loaded = models.load_models(device="cpu")
    options = preprocess_options(loaded)
    image = small_case.image
    first = pp.preprocess(image, **options)
    second = pp.preprocess(image, **options)
    classical = pp.preprocess(image)
    assert first.coarse_vessels is not None and np.array_equal(first.coarse_arteries, second.coarse_arteries)
    on = pp.arteries_on(first, image.geometry, image.array.shape)
    assert np.array_equal(on, pp.arteries_on(second, image.geometry, image.array.shape)) and on.any()
    # without the network: the half-maximum tree, the same as the learnt run keeps for the contour channel
    assert classical.coarse_vessels is None
    assert np.array_equal(classical.classical_arteries, classical.coarse_arteries)
    assert np.array_equal(classical.coarse_arteries, first.half_maximum_tree)
    np.testing.assert_array_equal(pp.arteries_on(classical, image.geometry, image.array.shape),
                                  pp.arteries_on(first, image.geometry, image.array.shape, learnt=False))
    centre = image.geometry.index_to_lps([48.0, 48.0, 24.0])
    np.testing.assert_array_equal(pp.voi_channels(first, centre, size=32)[0], pp.voi_channels(classical, centre, size=32)[0])
    # the learnt tree finds the truth better than the half-maximum rule on this held-out phantom
    truth = (small_case.visible > 0) | (small_case.aneurysms == 1)

    def dice(a: np.ndarray) -> float:
        return 2.0 * float((a & truth).sum()) / float(a.sum() + truth.sum())

    assert dice(on) > dice(pp.arteries_on(classical, image.geometry, image.array.shape))
