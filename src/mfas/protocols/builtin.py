"""Built-in protocols: the MMDG benchmark (MMDA), mmFAS cross-dataset, and their SimFAS twins.

Store keys: ``C``, ``P``, ``S``, ``W`` are stores prepared from the MMDG benchmark lists
(CASIA-CeFA, PADISI-Face, CASIA-SURF, WMCA); ``mmfas-C``, ``mmfas-S``, ``mmfas-W``, ``mmfas-H`` are
the mmFAS stores (CeFA with mfas' 6:1:13 subject split, CASIA-SURF, WMCA and HQ-WMCA test sets);
``sim`` is a SimFAS store whose domains are also named C, P, S and W.
"""

from __future__ import annotations

from mfas.protocols.core import DataRef, Protocol, TestSet

LETTERS = ("C", "P", "S", "W")
NAMES = {"C": "CASIA-CeFA", "P": "PADISI-Face", "S": "CASIA-SURF", "W": "WMCA", "H": "HQ-WMCA"}
LOO = ("CPS-W", "CPW-S", "CSW-P", "PSW-C")
LIMITED = ("CW-PS", "PS-CW")
MISSING = {"no-depth": ("rgb", "ir"), "no-ir": ("rgb", "depth"), "rgb-only": ("rgb",)}

MMDG_REF = "MMDG (Lin et al., CVPR 2024) benchmark lists, as used by MMDA (arXiv 2505.09484)"
MMFAS_REF = "mmFAS (Chen et al., AAAI 2025), cross-dataset protocol; lists defined by mfas"


def _ref(letter: str, split: str, sim: bool) -> DataRef:
    return DataRef(store="sim", domain=letter, split=split) if sim else DataRef(store=letter, split=split)


def _split(name: str) -> tuple[str, str]:
    src, tgt = name.split("-")
    return src, tgt


def _mmdg(sim: bool) -> list[Protocol]:
    prefix, family = ("sim/", "sim") if sim else ("", "mmdg")
    where = "SimFAS domains" if sim else "datasets"
    out = []
    for name in LOO:
        src, tgt = _split(name)
        train = [_ref(s, "train", sim) for s in src]
        select = [_ref(s, "val", sim) for s in src]
        full = TestSet(name=tgt, parts=(_ref(tgt, "test", sim),))
        out.append(Protocol(
            name=f"{prefix}loo/{name}", family=family, reference="" if sim else MMDG_REF,
            description=f"leave-one-out: train on {where} {', '.join(src)}, test on {tgt} (all modalities)",
            train=train, select=select, tests=(full,)))
        out.append(Protocol(
            name=f"{prefix}missing/{name}", family=family, reference="" if sim else MMDG_REF,
            description=f"missing modalities: trained as {prefix}loo/{name} with all modalities, "
                        f"tested on {tgt} with depth, IR, or both absent",
            train=train, select=select,
            tests=tuple(TestSet(name=f"{tgt} {k}", parts=(_ref(tgt, "test", sim),), modalities=m)
                        for k, m in MISSING.items()),
            average="none",
            notes="MMDA reports each missing-modality column averaged over the four leave-one-out splits"))
    for name in LIMITED:
        src, tgt = _split(name)
        combined = TestSet(name=tgt, parts=tuple(_ref(t, "test", sim) for t in tgt))
        singles = tuple(TestSet(name=t, parts=(_ref(t, "test", sim),)) for t in tgt)
        out.append(Protocol(
            name=f"{prefix}limited/{name}", family=family, reference="" if sim else MMDG_REF,
            description=f"limited sources: train on {', '.join(src)}, test on {' and '.join(tgt)}",
            train=[_ref(s, "train", sim) for s in src], select=[_ref(s, "val", sim) for s in src],
            tests=(combined, *singles), average="mean", average_over=tuple(tgt),
            notes=f"the test set {tgt!r} concatenates both targets, as the MMDA code scores them"))
    return out


def _mmfas(sim: bool) -> Protocol:
    if sim:
        train, select = [_ref("C", "train", True)], [_ref("C", "val", True)]
        tests = tuple(TestSet(name=t, parts=(_ref(t, "test", True),)) for t in LETTERS)
        return Protocol(name="sim/cross", family="sim", train=train, select=select, tests=tests,
                        average="weighted",
                        description="mmFAS-style cross-dataset: train and select on domain C, "
                                    "test on C, P, S, W; image-weighted average")
    tests = (TestSet(name="CeFA", parts=(DataRef(store="mmfas-C", split="test"),)),
             TestSet(name="MmFA", parts=(DataRef(store="mmfas-S", split="test"),)),
             TestSet(name="WMCA", parts=(DataRef(store="mmfas-W", split="test"),)),
             TestSet(name="HQ-WMCA", parts=(DataRef(store="mmfas-H", split="test"),)))
    return Protocol(
        name="mmfas/cross", family="mmfas", reference=MMFAS_REF,
        description="train and select on CASIA-CeFA (6:1:13 subject split), zero-shot test on CeFA, "
                    "CASIA-SURF (MmFA), WMCA and HQ-WMCA; image-weighted average",
        train=[DataRef(store="mmfas-C", split="train")], select=[DataRef(store="mmfas-C", split="val")],
        tests=tests, average="weighted",
        notes="HQ-WMCA depth is reconstructed from RGB for bona fide and 3D attacks and absent for flat "
              "attacks (presence mask). With the default depth backend (none) EVERY HQ-WMCA sample has no "
              "depth, so that column tests a model without depth; the mmFAS configs train with modality "
              "dropout so the missing-depth embedding is trained. The paper put SWIR in the third slot "
              "there: prepare mmfas-H with --ir-stream swir:BAND")


def _sim_in_domain() -> list[Protocol]:
    """Train, select and test inside one SimFAS domain: the ceiling a method reaches without domain shift."""
    return [Protocol(name=f"sim/in/{d}", family="sim", train=[_ref(d, "train", True)], select=[_ref(d, "val", True)],
                     tests=(TestSet(name=d, parts=(_ref(d, "test", True),)),),
                     description=f"in-domain: train, select and test on SimFAS domain {d} (disjoint subjects)")
            for d in LETTERS]


def builtin_protocols() -> list[Protocol]:
    return [*_mmdg(sim=False), _mmfas(sim=False), *_mmdg(sim=True), _mmfas(sim=True), *_sim_in_domain()]
