"""Protocol registry, YAML custom protocols and resolution to stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfas.errors import ConfigError
from mfas.protocols import (
    DataRef,
    StoreSet,
    get_protocol,
    list_protocols,
    load_datasets_yaml,
    load_protocol_file,
    parse_store_args,
    resolve,
)

EXPECTED = (
    [f"loo/{n}" for n in ("CPS-W", "CPW-S", "CSW-P", "PSW-C")]
    + [f"missing/{n}" for n in ("CPS-W", "CPW-S", "CSW-P", "PSW-C")]
    + ["limited/CW-PS", "limited/PS-CW", "mmfas/cross"]
)


def test_every_required_protocol_exists_with_sim_twin():
    names = {p.name for p in list_protocols()}
    for n in EXPECTED:
        assert n in names
        assert ("sim/" + n if n != "mmfas/cross" else "sim/cross") in names


def test_leave_one_out_definition():
    p = get_protocol("loo/CPS-W")
    assert [str(r) for r in p.train] == ["C:train", "P:train", "S:train"]
    assert [str(r) for r in p.select] == ["C:val", "P:val", "S:val"]
    assert [str(r) for t in p.tests for r in t.parts] == ["W:test"]
    assert p.tests[0].modalities == ("rgb", "depth", "ir")


def test_missing_modality_tests():
    p = get_protocol("missing/PSW-C")
    assert {t.name: t.missing for t in p.tests} == {"C no-depth": ("depth",), "C no-ir": ("ir",),
                                                    "C rgb-only": ("depth", "ir")}
    assert p.train_modalities == ("rgb", "depth", "ir")  # trained with all, as MMDG does


def test_limited_and_cross_averaging():
    p = get_protocol("limited/PS-CW")
    assert [t.name for t in p.averaged_tests] == ["C", "W"]
    assert [str(r) for r in p.tests[0].parts] == ["C:test", "W:test"]
    c = get_protocol("mmfas/cross")
    assert c.average == "weighted" and [t.name for t in c.tests] == ["CeFA", "MmFA", "WMCA", "HQ-WMCA"]


def test_unknown_protocol_suggests():
    with pytest.raises(ConfigError, match="did you mean 'loo/CPS-W'"):
        get_protocol("loo/CPS-X")


def test_data_ref_parsing():
    assert DataRef.parse("sim[C]:train") == DataRef(store="sim", domain="C", split="train")
    for bad in ("sim", "sim:dev", "[C]:train"):
        with pytest.raises((ConfigError, ValueError)):
            DataRef.parse(bad)


def test_custom_protocol_yaml(tmp_path: Path):
    f = tmp_path / "mine.yaml"
    f.write_text("""
protocols:
  - name: mine/lab-to-field
    description: train on lab captures, test in the field without IR
    train: [lab:train]
    select: [lab:val]
    tests:
      - name: field
        parts: [field:test]
        modalities: rgb,depth
""")
    (p,) = load_protocol_file(f)
    assert get_protocol("mine/lab-to-field") == p
    assert p.tests[0].missing == ("ir",) and p.stores == ("field", "lab")


@pytest.mark.parametrize("body, pattern", [
    ("name: x\ntrain: [a:train]\ntests: [{name: t, parts: [a:test]}]\nslect: [a:val]\n",
     "unknown key 'slect'.*'select'"),
    ("name: x\ntrain: [a:train]\ntests: [{name: t, part: [a:test]}]\n",
     "unknown key 'tests.0.part'; did you mean 'tests.0.parts'"),
    ("name: x\ntrain: [a:training]\ntests: [{name: t, parts: [a:test]}]\n", "split must be one of train, val, test"),
    ("name: x\ntrain: [a]\ntests: [{name: t, parts: [a:test]}]\n", "bad data reference"),
    ("name: x\ntrain: [a:train]\ntests: [{name: t, parts: [a:test], modalities: [rgb, sonar]}]\n",
     "unknown modality 'sonar'"),
    ("name: x\ntrain: [a:train]\ntests: []\n", "at least one test set"),
    ("[unclosed", "not valid YAML"),
])
def test_bad_protocol_files_name_the_key(tmp_path: Path, body: str, pattern: str):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=pattern):
        load_protocol_file(f, register=False)


def test_resolution_against_a_store(sim_store: Path, tmp_path: Path):
    stores = StoreSet(parse_store_args([f"sim={sim_store}"]))
    p = get_protocol("sim/loo/CPS-W")
    stores.check(p)
    st, idx = resolve(p.tests[0].parts[0], stores)
    assert set(st.column("domain")[idx].tolist()) == {"W"} and set(st.column("split")[idx].tolist()) == {"test"}
    with pytest.raises(ConfigError, match="needs store key"):
        StoreSet({}).check(p)
    with pytest.raises(ConfigError, match="domains are"):
        resolve(DataRef(store="sim", domain="Z", split="test"), stores)
    y = tmp_path / "datasets.yaml"
    y.write_text(f"stores:\n  sim: {sim_store}\n  rel: stores/x\n")
    m = load_datasets_yaml(y)
    assert m["sim"] == sim_store and m["rel"] == (tmp_path / "stores/x").resolve()
    with pytest.raises(ConfigError, match="KEY=PATH"):
        parse_store_args(["sim"])
