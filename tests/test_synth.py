"""SimFAS: deterministic, physically motivated cues, no mean/std shortcut."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mfas.data import open_store
from mfas.data.sanity import planarity_report, sanity_report
from mfas.data.synth import PROFILES, generate_store, plan, render
from mfas.data.synth.generate import Spec
from mfas.errors import ConfigError


def test_render_shapes_and_types():
    im = render(Spec(0, "C", 0, 0, "train", "bonafide", 0, 0), 48)
    assert im["rgb"].shape == (48, 48, 3) and im["depth"].shape == (48, 48) and im["ir"].shape == (48, 48)
    assert all(a.dtype == np.uint8 for a in im.values())


@pytest.mark.parametrize("pai", ["bonafide", "print", "replay", "cut", "mask_rigid", "mask_flexible", "mask_paper",
                                 "partial"])
def test_render_is_deterministic(pai):
    spec = Spec(3, "W", 1, 2, "train", pai, 4, 0)
    a, b = render(spec, 40), render(spec, 40)
    for m in a:
        np.testing.assert_array_equal(a[m], b[m])


def test_store_does_not_depend_on_worker_count(tmp_path: Path):
    generate_store(tmp_path / "a", per_domain=6, domains=("C", "S"), size=32, seed=5, workers=1)
    generate_store(tmp_path / "b", per_domain=6, domains=("C", "S"), size=32, seed=5, workers=2)
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    for m in a.modalities:
        np.testing.assert_array_equal(a.arrays[m], b.arrays[m])
    assert a.column("sample_id").tolist() == b.column("sample_id").tolist()


def test_plan_splits_by_subject_and_follows_pai_mix():
    specs = plan(0, ("C", "S"), 600)
    by_subject: dict = {}
    for s in specs:
        by_subject.setdefault((s.domain, s.subject), set()).add(s.split)
    assert all(len(v) == 1 for v in by_subject.values())  # no subject in two splits
    s_species = {s.pai for s in specs if s.domain == "S"}
    assert s_species == set(PROFILES["S"].pai_mix)  # S only has prints and cut-outs
    splits = [s.split for s in specs]
    assert {"train", "val", "test"} == set(splits)
    frames = plan(0, ("C",), 9, frames_per_video=3)
    assert [s.video for s in frames] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_frames_of_a_video_share_the_scene_but_not_the_noise():
    a = render(Spec(0, "C", 0, 1, "train", "bonafide", 7, 0), 48)
    b = render(Spec(0, "C", 1, 1, "train", "bonafide", 7, 1), 48)
    diff = np.abs(a["rgb"].astype(int) - b["rgb"].astype(int))
    assert 0 < diff.mean() < 8


def _centre(img: np.ndarray) -> np.ndarray:
    h = img.shape[0]
    return img[h // 4: 3 * h // 4, h // 4: 3 * h // 4].astype(float)


def test_replay_panel_emits_almost_no_nir_before_gain():
    # W has no automatic gain: the screen's NIR is far darker than a lit face
    live = np.mean([_centre(render(Spec(0, "W", i, i, "test", "bonafide", i, 0), 64)["ir"]).mean()
                    for i in range(6)])
    replay = np.mean([_centre(render(Spec(0, "W", i, i, "test", "replay", i, 0), 64)["ir"]).mean()
                      for i in range(6)])
    assert replay < 0.6 * live


def test_unknown_domain_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown SimFAS domain 'X'"):
        generate_store(tmp_path / "x", per_domain=2, domains=("X",))


def test_sim_store_has_four_domains_all_splits(sim_store: Path):
    st = open_store(sim_store)
    assert sorted(set(st.column("domain").tolist())) == ["C", "P", "S", "W"]
    for d in "CPSW":
        for split in ("train", "val", "test"):
            assert st.select(split=split, domain=d).size > 0
    assert st.meta["provenance"]["source"] == "SimFAS"


def test_shortcut_probe_stays_below_limit(sim_store_medium: Path):
    rep = sanity_report(open_store(sim_store_medium))
    assert rep["passed"], rep["auc_per_heldout_domain"]
    assert all(v <= 0.75 for v in rep["auc_per_heldout_domain"].values())


def test_probe_detects_a_planted_shortcut(tmp_path: Path):
    # the probe must be able to fail: brighten every bona fide RGB image and it finds that
    from mfas.data import Sample, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "planted", size=(8, 8), modalities=("rgb",)) as w:
        for i in range(80):
            y = i % 2
            w.add(Sample(f"p{i}", y, "bonafide" if y else "print", "x", domain="AB"[i // 40],
                         images={"rgb": rng.integers(0, 128, (8, 8, 3), dtype=np.uint8) + 100 * y}))
    rep = sanity_report(open_store(tmp_path / "planted"))
    assert not rep["passed"] and rep["max_auc"] > 0.95


def test_masks_and_partial_are_not_separable_by_planarity(sim_store_medium: Path):
    rep = planarity_report(open_store(sim_store_medium))
    flat, shaped = [], []
    for d, row in rep.items():
        for sp, auc in row.items():
            if sp in ("print", "replay") and d != "S":  # S's depth is too noisy to show flatness
                flat.append(auc)
            if sp in ("mask_rigid", "mask_flexible", "mask_paper", "partial"):
                shaped.append(auc)
    assert min(flat) > 0.9  # a flat instrument is flat in depth
    assert max(shaped) < 0.8 and np.mean(shaped) < 0.65  # face-shaped instruments are not


def test_domain_profiles_are_yaml_files_and_a_new_one_needs_no_code(tmp_path: Path):
    """The built-in C/P/S/W are YAML files; a capture set-up of one's own is a YAML file, validated like configs."""
    from typer.testing import CliRunner

    from mfas.cli.main import app
    from mfas.data.synth.domains import BUILTIN_DIR, load_profiles

    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == ["C", "P", "S", "W"]
    mine = tmp_path / "lab.yaml"
    mine.write_text("lab:\n  base: W\n  description: our booth\n  pai_mix: {bonafide: 0.5, print: 0.5}\n"
                    "  native_res: 96\n  instruments: {print: {carbon: [0.5, 0.6]}}\n")
    prof = load_profiles(mine)["lab"]
    assert prof.native_res == 96 and prof.background == "texture"  # inherited from W
    assert prof.instrument("print", "carbon") == (0.5, 0.6) and prof.instrument("replay", "brightness")
    r = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "s"), "--profiles", str(mine), "-n", "6",
                                 "--size", "32", "--workers", "1"])
    assert r.exit_code == 0, r.output
    st = open_store(tmp_path / "s")
    assert set(st.column("domain")) == {"lab"} and set(st.column("pai")) <= {"bonafide", "print"}
    assert st.meta["provenance"]["profiles"]["lab"]["native_res"] == 96


def test_attack_session_changes_the_scene_of_attacks_only(tmp_path: Path):
    """A capture-session bias (attacks recorded at another distance): bona fide renders are unchanged, attacks
    are rendered with the session's scene fields."""
    from mfas.data.synth.domains import load_profiles
    from mfas.data.synth.generate import Spec, render

    f = tmp_path / "p.yaml"
    f.write_text("plain:\n  base: W\n  attack_session: {}\n"
                 "far:\n  base: W\n  attack_session: {distance: [2.0, 2.0], background: dark}\n")
    profs = load_profiles(f)
    assert profs["far"].for_species("print").distance == (2.0, 2.0)
    assert profs["far"].for_species("bonafide") is profs["far"]
    for pai, same in (("bonafide", True), ("replay", False)):
        spec = Spec(0, "W", 0, 0, "train", pai, 0, 0)
        a, b = render(spec, 32, profs["plain"]), render(spec, 32, profs["far"])
        assert all(np.array_equal(a[m], b[m]) for m in a) == same, pai


def _with(tmp_path: Path, species: str, key: str) -> dict:
    """Profiles ``plain`` and ``with``: W with the instrument property at probability 0 and 1 (a profile's
    ``instruments`` replace W's per species)."""
    from mfas.data.synth.domains import load_profiles

    f = tmp_path / "i.yaml"
    f.write_text(f"plain:\n  base: W\n  instruments: {{{species}: {{{key}: [0, 0]}}}}\n"
                 f"with:\n  base: W\n  instruments: {{{species}: {{{key}: [1, 1]}}}}\n")
    return load_profiles(f)


def test_bonafide_glasses_add_a_frame_and_let_depth_see_the_eyes_through_the_lenses():
    """Own glasses: a frame nearer than the face (in depth, dark or bright in RGB/NIR), clear lenses that the
    depth camera sees through (the eyes keep their depth) with a glint, and the rest of the face untouched."""
    from mfas.data.synth.attacks import live, own_glasses
    from mfas.data.synth.domains import get_profile
    from mfas.data.synth.face import Identity

    rng = np.random.default_rng(3)
    person, reg = live(Identity.sample(rng), rng, get_profile("W"), 96, 0.7)
    g = own_glasses(person, reg, np.random.default_rng(4), 96)
    frame = g.z < person.z - 0.004
    lenses = (g.specular > person.specular + 0.1) & ~frame
    assert frame.sum() > 30 and lenses.sum() > 30
    np.testing.assert_array_equal(g.z[lenses], person.z[lenses])
    rows = np.nonzero(frame.any(1))[0]
    assert rows.max() - rows.min() < 30  # a band across the eyes
    outside = np.ones_like(frame)
    outside[rows.min() - 3:rows.max() + 4] = False
    for f in ("z", "albedo_rgb", "albedo_nir", "specular", "normal"):
        np.testing.assert_array_equal(getattr(g, f)[outside], getattr(person, f)[outside])


def test_paper_mask_is_face_shaped_in_depth_where_a_print_is_flat(tmp_path: Path):
    """A printed face worn over another face (mask_paper): depth follows a face, not a plane."""
    from mfas.data import Sample, StoreWriter
    from mfas.data.sanity import depth_planarity

    with StoreWriter(tmp_path / "s", size=(64, 64), modalities=("rgb", "depth", "ir")) as w:
        for k in range(12):
            for pai in ("print", "mask_paper"):
                im = render(Spec(0, "W", k, k, "train", pai, k, 0), 64)
                w.add(Sample(f"{pai}{k}", 0, pai, f"v{pai}{k}", domain="W", images=im))
    st = open_store(tmp_path / "s")
    r, pai = depth_planarity(st), st.column("pai")
    assert np.nanmedian(r[pai == "mask_paper"]) > 1.8 * np.nanmedian(r[pai == "print"])


def test_custom_rigid_mask_takes_the_victims_relief(tmp_path: Path):
    profs = _with(tmp_path, "mask_rigid", "custom")
    spec = Spec(0, "W", 0, 0, "train", "mask_rigid", 0, 0)
    a, b = render(spec, 64, profs["plain"]), render(spec, 64, profs["with"])
    assert not np.array_equal(a["depth"], b["depth"])


def test_instruments_at_probability_zero_draw_nothing():
    """Domains without glasses, worn prints or custom moulds render exactly what they rendered before these
    instruments existed: a probability of 0 draws no random number."""
    from mfas.data.synth.attacks import chance
    from mfas.data.synth.domains import get_profile

    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert not chance(rng, get_profile("P"), "bonafide", "glasses")
    assert rng.bit_generator.state == state
    assert chance(rng, get_profile("C"), "bonafide", "glasses") in (True, False)
    assert rng.bit_generator.state != state


@pytest.mark.parametrize("text,culprit", [
    ("lab:\n  base: W\n  nativ_res: 96\n", "unknown key 'nativ_res'; did you mean 'native_res'"),
    ("lab:\n  base: Q\n", "base 'Q' is not a known profile"),
    ("lab:\n  description: x\n", "'pai_mix' is required"),
    ("lab:\n  base: W\n  pai_mix: {bonafide: 1, prnt: 1}\n", "unknown species 'prnt'; did you mean 'print'"),
    ("lab:\n  base: W\n  pai_mix: {print: 1}\n", "needs bona fide and at least one attack"),
    ("lab:\n  base: W\n  distance: [1.0, 0.5]\n", "distance must be [low, high]"),
    ("lab:\n  base: W\n  depth_mode: log\n", "depth_mode must be one of range, distance, normalised"),
    ("lab:\n  base: W\n  instruments: {mask_flexible: {nir: [0.1, 0.2]}}\n", "unknown property 'nir'"),
    ("lab:\n  base: W\n  instruments: {print: {carbon: [0.9, 0.1]}}\n", "instruments.print.carbon must be [low, high]"),
    ("lab:\n  base: W\n  instruments: {bonafide: {glases: [1, 1]}}\n", "unknown property 'glases'"),
    ("lab:\n  base: W\n  instruments: {print: {worn: [1, 1]}}\n", "unknown property 'worn'"),
    ("lab:\n  base: W\n  attack_session: {blur: 2}\n", "attack_session: 'blur' is not a scene field"),
    ("lab:\n  base: W\n  attack_session: {distance: [1.0, 0.5]}\n", "attack_session: distance must be [low, high]"),
    ("lab:\n  base: W\n  attack_session: [1]\n", "attack_session must map scene fields"),
    ("- a\n- b\n", "expected a mapping of domain names"),
    ("lab: [1, 2\n", "not a YAML file"),
])
def test_bad_profile_files_name_the_key(tmp_path: Path, text: str, culprit: str):
    from mfas.data.synth.domains import load_profiles

    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        load_profiles(f)
