"""Write the configs of the MMDG benchmark's baselines (configs/<method>/) and their SimFAS twins
(configs/sim/baselines/{loo,limited}/<protocol>/<method>.yaml).

    python tools/make_baseline_configs.py      # rewrites them; the files are committed

Recipes follow each method's public code where it has one (docs/models/<method>.md says which numbers come
from where and which are ours). Iteration-based recipes (FLIP, ViT, ViTAF: 4,000 iterations) are written as
40 epochs of 100 batches. The real-data configs name pretrained weights by a tag that downloads when online;
offline, pass a local file with --set model.pretrained=/path. The SimFAS twins use the tiny sizes with random
weights and train every weight (a frozen random backbone would learn nothing), on the schedule of the other
SimFAS baselines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOO = ["CPS-W", "CPW-S", "CSW-P", "PSW-C"]
LIMITED = ["CW-PS", "PS-CW"]
POLICIES = ["test_eer", "val_eer", "bpcer:0.01"]
#: ViTAF's cosine-loss weight by target, as released for CeFA (1), SURF (0.1) and WMCA (0.01); PADISI has no
#: released value: 0.1, the middle one (ours)
VITAF_COS = {"C": 1.0, "S": 0.1, "W": 0.01, "P": 0.1}

def recipe(name: str, lr: float, weight_decay: float, batch: int, epochs: int, pretrained: str | None = None,
           sampler: str = "class_domain", iterations: bool = False, **optim: object) -> dict:
    """One method's real-data recipe: Adam (L2 weight decay) at a constant lr unless ``optim`` says otherwise;
    ``iterations``: epochs of 100 batches (the iteration-based codes: 40 x 100 = 4,000 iterations)."""
    data = {"batch_size": batch, "sampler": sampler, **({"batches_per_epoch": 100} if iterations else {})}
    return {"model": {"name": name, **({"pretrained": pretrained} if pretrained else {})}, "data": data,
            "optim": {"name": "adam", "lr": lr, "weight_decay": weight_decay, "schedule": "constant", "warmup": 0.0,
                      **optim},
            "trainer": {"max_epochs": epochs}}


RECIPES: dict[str, dict] = {
    "vit": recipe("vit", 1.0e-4, 1.0e-6, 24, 40, "torchvision", iterations=True),
    "clip": recipe("clip", 1.0e-6, 1.0e-6, 24, 40, "openai", iterations=True),
    "flip-v": recipe("flip-v", 1.0e-6, 1.0e-6, 24, 40, "openai", iterations=True),
    "flip-it": recipe("flip-it", 1.0e-6, 1.0e-6, 24, 40, "openai", iterations=True),
    "vitaf": recipe("vitaf", 1.0e-4, 1.0e-6, 24, 40, "orig_in21k_ft_in1k", iterations=True),
    "mmdg": recipe("mmdg", 5.0e-5, 5.0e-5, 16, 80, "torchvision"),
    "cmfl": recipe("cmfl", 1.0e-4, 1.0e-6, 64, 25, "torchvision", sampler="random"),
    "mm-cdcn": recipe("mm-cdcn", 1.0e-4, 5.0e-5, 9, 50, sampler="random", schedule="step", step_epochs=20,
                      step_gamma=0.5),
}
#: what the SimFAS twins change for a backbone without pretrained weights
SIM_MODEL = {"vitaf": {"train": "all"}, "mmdg": {"train_blocks": -1, "freeze_patch_embed": False},
             "mm-cdcn": {"img_size": 64}}
#: full-resolution convolutions make MM-CDCN's run ~30 minutes at 112² on 2 cores: its twin reads 64²
SIM_SIZE = {"mm-cdcn": 64}
SIM_LR = {"vit": 3.0e-4, "vitaf": 3.0e-4, "mmdg": 3.0e-4, "clip": 3.0e-4, "flip-v": 3.0e-4, "flip-it": 3.0e-4,
          "cmfl": 1.0e-3, "mm-cdcn": 1.0e-3}

HEADER = ("# {method} on the MMDG benchmark, protocol {protocol} (docs/models/{doc}.md: the recipe and where it\n"
          "# comes from). Needs the MMDG stores in datasets.yaml (docs/datasets.md){weights}.\n")
SIM_HEADER = ("# {method} (tiny, random weights, every weight trained) on SimFAS {protocol}, the evidence set-up of\n"
              "# docs/results/simfas.md. Needs: mfas data synth stores/simfas -n 1500.\n")


def real(method: str, protocol: str) -> dict:
    r = RECIPES[method]
    model = dict(r["model"])
    target = protocol.split("/")[-1].split("-")[-1]
    if method == "vitaf" and len(target) == 1:
        model["cos_weight"] = VITAF_COS[target]
    return {"name": f"{method}_{protocol.replace('/', '-')}", "seed": 0, "protocol": protocol,
            "data": {"image_size": 224, "augment": True, **r["data"]}, "model": model,
            "optim": dict(r["optim"]), "trainer": dict(r["trainer"]),
            "eval": {"policies": POLICIES, "selection": "last"}}


def sim(method: str, protocol: str) -> dict:
    model = {"name": f"{method}-tiny", **SIM_MODEL.get(method, {})}
    return {"name": f"{method}-tiny_sim_{protocol.replace('/', '-')}", "seed": 0, "protocol": f"sim/{protocol}",
            "data": {"stores": {"sim": "stores/simfas"}, "image_size": SIM_SIZE.get(method, 112), "batch_size": 32,
                     "sampler": "class_balanced", "augment": True},
            "model": model,
            "optim": {"lr": SIM_LR[method], "weight_decay": 0.05, "schedule": "cosine", "warmup": 0.1},
            "trainer": {"max_epochs": 10, "deterministic": True},
            "eval": {"policies": POLICIES, "selection": "last"}}


def write(path: Path, cfg: dict, header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "# Generated by tools/make_baseline_configs.py.\n" + yaml.safe_dump(cfg, sort_keys=False))


def main() -> None:
    n = 0
    for method, r in RECIPES.items():
        shutil.rmtree(ROOT / "configs" / method, ignore_errors=True)
        pre = r["model"].get("pretrained")
        weights = (f" and weights: `pretrained: {pre}` downloads them when online;\n# offline, give a local file "
                   "(--set model.pretrained=/path)") if pre else ""
        doc = {"flip-v": "flip", "flip-it": "flip"}.get(method, method)
        for p in [f"loo/{x}" for x in LOO] + [f"missing/{x}" for x in LOO] + [f"limited/{x}" for x in LIMITED]:
            write(ROOT / "configs" / method / f"{p.replace('/', '-')}.yaml", real(method, p),
                  HEADER.format(method=method, protocol=p, doc=doc, weights=weights))
            n += 1
        for p in [f"loo/{x}" for x in LOO] + [f"limited/{x}" for x in LIMITED]:
            write(ROOT / "configs/sim/baselines" / p / f"{method}.yaml", sim(method, p),
                  SIM_HEADER.format(method=method, protocol=p))
            n += 1
    print("wrote", n, "configs")


if __name__ == "__main__":
    main()
