"""Write the mmFAS CeFA subject split shipped in ``src/mfas/data/prepare/lists/mmfas_cefa_subjects.csv``.

The mmFAS paper trains on CASIA-CeFA with a 6:1:13 train/val/test split and published no list. mfas
splits by subject so that no subject is in two splits: subject number n goes to train when
n mod 20 < 6, to val when n mod 20 == 6, and to test otherwise. That gives exactly 150 / 25 / 325 of the
500 subjects of each ethnicity (AF, CA, EA), and the same rule over the 3D-mask (001-100) and
silicone-mask (001-008) identities. Run ``python tools/make_mmfas_lists.py`` to regenerate it.
"""

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/mfas/data/prepare/lists/mmfas_cefa_subjects.csv"
GROUPS = {"AF": range(0, 500), "CA": range(0, 500), "EA": range(0, 500), "3D-Mask": range(1, 101),
          "Silicone-Mask": range(1, 9)}


def split_of(n: int) -> str:
    r = n % 20
    return "train" if r < 6 else "val" if r == 6 else "test"


def main() -> None:
    lines = ["group,subject,split"]
    lines += [f"{g},{n:03d},{split_of(n)}" for g, ids in GROUPS.items() for n in ids]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(lines) - 1} subjects)")


if __name__ == "__main__":
    main()
