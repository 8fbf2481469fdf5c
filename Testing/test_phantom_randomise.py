"""Randomised phantoms, varied anatomy and the params dataclass."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AneurysmSegLib.cli import phantom as phantom_cmd
from AneurysmSegLib.phantom import anatomy
from AneurysmSegLib.phantom.params import PhantomParams, read_params
from AneurysmSegLib.phantom.randomise import plan, random_grid, randomised_case
from AneurysmSegLib.phantom.render import generate_case, sample_params, write_case

BUDGET = 72 * 72 * 36  # a small voxel budget keeps each randomised case under a second


def test_randomised_cases_are_deterministic_and_diverse() -> None:
    cases = [randomised_case(seed, max_voxels=BUDGET) for seed in range(6)]
    again = randomised_case(3, max_voxels=BUDGET)
    assert np.array_equal(again.image.array, cases[3].image.array) and np.array_equal(again.visible, cases[3].visible)
    assert again.params.randomised == cases[3].params.randomised
    spacings = {tuple(np.round(c.geometry.spacing, 3)) for c in cases}
    assert len(spacings) == 6, "every case has its own voxel size"
    for c in cases:
        img = c.image.array
        assert img.size <= BUDGET * 4 and np.isfinite(img).all() and img.std() > 0
        assert 0.2 <= min(c.geometry.spacing) and max(c.geometry.spacing) <= 1.2
        assert c.params.anatomy == "varied" and c.params.randomised["steps"] is not None
        assert not np.any((c.visible > 0) & (c.vessels == 0))
        assert np.array_equal(c.instances > 0, c.aneurysms > 0)
        for x, y, z, r in c.locations:
            assert c.instances[z, y, x] > 0 or np.any(c.instances[max(z - 2, 0):z + 3, max(y - 2, 0):y + 3,
                                                                    max(x - 2, 0):x + 3])


def test_random_grid_respects_the_voxel_budget() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape, spacing, fov = random_grid(rng, BUDGET)
        assert np.prod(shape) <= BUDGET and min(shape) >= 16
        assert 0.2 <= spacing[0] <= 1.0 and spacing[0] <= spacing[2] <= 1.2 and fov in ("slab", "crop")


def test_many_randomised_draws_cover_the_input_kinds() -> None:
    """Over many seeds every transform is drawn, and about the realistic share keeps its looks."""
    plans = [plan(seed) for seed in range(400)]
    steps = {name for p in plans for name, _ in p.steps}
    assert steps == {"partial_slab", "cow_crop", "vessels_only", "brain_extracted", "background_masked",
                     "matrix_zerofilled", "uint8", "int16_offset", "uint16_4095", "float_scaled"}
    assert 0.22 < np.mean([p.realistic for p in plans]) < 0.38
    assert all(p.appearance == {} for p in plans if p.realistic)
    assert {p.scanner for p in plans if p.realistic} == {"train", "shifted"}
    for p in plans:
        if p.appearance:
            assert p.appearance["contrast"] >= 1.3 * max(1.0, p.appearance["wm_ratio"], p.appearance["csf_ratio"]) - 1e-9
    assert plan(7) == plan(7)


def test_varied_anatomy_records_shape_site_and_size() -> None:
    rng = np.random.default_rng(5)
    site = anatomy.Site("bend_ICA_L", np.zeros(3), np.array([0.0, 0.0, 1.0]), 2.0, 1.0)
    shapes = {anatomy.make_varied_aneurysm(rng, site, 6.0).extra["kind"] for _ in range(80)}
    assert shapes == set(anatomy.SHAPES)
    necks = [anatomy.make_varied_aneurysm(rng, site, 6.0).extra for _ in range(40)]
    assert {n["neck"] for n in necks} == {"wide", "narrow"}
    assert all(n["neck_k"] < 0.5 for n in necks if n["neck"] == "wide")
    sizes = [anatomy.sample_varied_diameter(rng) for _ in range(400)]
    assert min(sizes) >= 1.5 and max(sizes) > 15 and max(sizes) <= 25
    assert anatomy.site_type("bend_M1_R") == "sidewall" and anatomy.site_type("AcomA") == "bifurcation"
    case = generate_case(2, (64, 64, 28), (3.0, 3.0, 2.4), anatomy="varied", n_aneurysms=2)
    for a in case.params.aneurysms:
        assert a["kind"] in anatomy.SHAPES and a["neck"] in ("wide", "narrow")
        assert anatomy.site_type(a["site"]) in ("sidewall", "bifurcation") and 1.5 <= a["diameter_mm"] <= 25


def test_varied_circle_of_willis_variants() -> None:
    head = anatomy.HeadShape(np.array([0.0, 9.0, 16.0]), np.array([64.0, 84.0, 72.0]))
    seen = set()
    for seed in range(40):
        tree = anatomy.build_tree(np.random.default_rng(seed), head, varied=True)
        seen.update(v.rsplit("_", 1)[0] for v in tree.variants)
        for v in tree.variants:
            if v.startswith("absent_A1"):
                assert not tree.branches["A1_" + v[-1]].drawn
    assert {"fetal_PCA", "hypoplastic_A1", "absent_A1", "hypoplastic_PcomA", "absent_PcomA"} <= seen


def test_the_acomm_site_records_its_inflow_a1() -> None:
    """An AComm aneurysm's size ratio is taken on the artery feeding it: the larger drawn A1 at its
    junction, thicker than the AComm itself; other sites feed from their parent (no inflow of their own)."""
    head = anatomy.HeadShape(np.array([0.0, 9.0, 16.0]), np.array([64.0, 84.0, 72.0]))
    for seed in range(12):
        tree = anatomy.build_tree(np.random.default_rng(seed), head, varied=True)
        acomm = next(s for s in tree.sites if s.name == "AcomA")
        ends = [float(tree.branches[f"A1_{t}"].radii[-1]) for t in "LR" if tree.branches[f"A1_{t}"].drawn]
        assert acomm.inflow_radius == max(ends) and acomm.inflow_radius > acomm.parent_radius
        assert all(s.inflow_radius is None for s in tree.sites if s.name != "AcomA")


def test_params_dataclass_round_trip_and_old_files(tmp_path: Path) -> None:
    p = sample_params(np.random.default_rng(1))
    assert isinstance(p, PhantomParams) and p.noise == p["noise"] and "anatomy" not in p
    with pytest.raises(ValueError, match="unknown phantom parameters"):
        p.with_overrides(not_a_parameter=1)
    with pytest.raises(ValueError, match="anatomy"):
        p.with_overrides(anatomy="alien")
    case = generate_case(4, (48, 48, 24), (3.5, 3.5, 2.8), n_aneurysms=1)
    folder = write_case(case, tmp_path / "c")
    raw = json.loads((folder / "params.json").read_text())
    assert list(raw)[:3] == ["scanner", "shape_xyz", "spacing"] and list(raw)[-3:] == ["seed", "aneurysms", "variants"]
    assert read_params(folder) == case.params
    # the bundled sample's params.json, written before the dataclass existed, still reads
    sample = read_params(Path(__file__).resolve().parents[1] / "AneurysmSeg" / "Resources" / "Sample")
    assert sample.seed is not None and sample.aneurysms and sample.anatomy == "classic"
    raw["typo"] = 1
    (folder / "params.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="typo"):
        read_params(folder)


def test_cli_randomise(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    phantom_cmd.configure_parser(parser)
    args = parser.parse_args([str(tmp_path), "--randomise", "--cases", "2", "--seed", "5", "--max-voxels", str(BUDGET)])
    assert phantom_cmd.run(args) == 0
    sizes = set()
    for name in ("P0000", "P0001"):
        tof = sitk.ReadImage(str(tmp_path / name / "orig" / "TOF.nii.gz"))
        sizes.add(tof.GetSize())
        assert "randomised" in json.loads((tmp_path / name / "params.json").read_text())
    assert len(sizes) == 2
