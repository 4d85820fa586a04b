"""MiniFASNet (Silent-Face-Anti-Spoofing, Minivision, Apache-2.0): an RGB anti-spoofing peer with real weights,
inference only.

The released ONNX files take a 1 x 3 x 80 x 80 BGR face crop with values 0-255 and give three logits: index 1
is a real face, 0 and 2 are attacks (print and replay). The crop is the face box scaled 2.7 times
(``MiniFASNetV2``) or 4.0 times (``MiniFASNetV1SE``), reduced uniformly when it would leave the frame and then
moved inside it, and stretched to 80 x 80: :data:`CROPS`, recorded in the peer's bundle so that ``mfas
predict`` crops raw frames as the model expects. Silent-Face found faces with a RetinaFace detector; mfas uses
YuNet, whose boxes differ slightly (docs/models/minifasnet.md).

It runs through OpenCV's DNN module (no extra dependency) on the CPU, one crop at a time; it has no trainable
parameters. Write a bundle with ``mfas peer minifasnet --onnx FILE --out runs/minifasnet-v2``.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from mfas.data.faces import CropPolicy
from mfas.errors import ConfigError, DataError
from mfas.models.base import ModelOutput, PadModel
from mfas.models.registry import register_model

#: the crop each released file was trained on (Silent-Face's ``scale`` per model file)
CROPS = {"v2": CropPolicy(scale=2.7, square=False, size=80, fit="shift"),
         "v1se": CropPolicy(scale=4.0, square=False, size=80, fit="shift")}
#: SHA-256 of the released files, to say which one a bundle used
KNOWN = {"v2": "MiniFASNetV2.onnx", "v1se": "MiniFASNetV1SE.onnx"}


class MiniFASNet(PadModel):
    """The Silent-Face MiniFASNet ONNX behind the mfas model interface (RGB only, 80 x 80, no training).

    Args:
        onnx: path of ``MiniFASNetV2.onnx`` or ``MiniFASNetV1SE.onnx`` (required: mfas downloads nothing). Not
            ``pretrained``: these are the model's weights, not a starting point that a bundle's weights replace.
        variant: ``v2`` or ``v1se``: which crop the file expects.
        sha256: the file's expected SHA-256 (a bundle records it; a different file is refused).

    ``batch["rgb"]`` is (B, 3, 80, 80), values 0-255 after the bundle's normalisation (mean 0, std 1/255).
    """

    modalities = ("rgb",)
    input_size = (80, 80)
    norm_stats = {"rgb": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))}
    inference_only = True
    num_features = 3  # the network's three logits are all it gives
    modal_features = True

    def __init__(self, onnx: str | None = None, variant: str = "v2", sha256: str = ""):
        super().__init__()
        if variant not in CROPS:
            raise ConfigError(f"minifasnet: variant must be one of {', '.join(CROPS)}, got {variant!r}")
        if not onnx:
            raise ConfigError("minifasnet: onnx= is required: the path of the released ONNX file "
                              f"({KNOWN[variant]}, from Silent-Face-Anti-Spoofing; ../shared/models/minifasnet "
                              "on the development machines)")
        path = Path(onnx)
        if not path.is_file():
            raise DataError(path, "MiniFASNet ONNX file not found")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha256 and digest != sha256:
            raise DataError(path, f"has SHA-256 {digest[:12]}..., not the {sha256[:12]}... this bundle was made with")
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as e:
            raise DataError(path, f"not a MiniFASNet ONNX file OpenCV can read ({str(e).strip().splitlines()[-1]})"
                            ) from None
        self.variant, self.sha256, self.crop_policy = variant, digest, CROPS[variant]
        self._lock = threading.Lock()

    def forward(self, batch: dict) -> ModelOutput:
        x = batch["rgb"].detach().float().cpu().numpy()[:, ::-1]  # RGB -> BGR, as the network was trained
        logits = []
        with self._lock:
            for one in x:
                self._net.setInput(np.ascontiguousarray(one[None], dtype=np.float32))
                logits.append(self._net.forward()[0].astype(np.float64))
        three = torch.as_tensor(np.stack(logits), dtype=torch.float32).to(batch["rgb"].device)
        # two-class logits whose softmax is P(real) of the three-way softmax: attack = logsumexp(print, replay)
        attack = torch.logsumexp(three[:, [0, 2]], dim=1)
        present = batch["present"][:, :1].bool() if "present" in batch else \
            torch.ones(len(three), 1, dtype=torch.bool, device=three.device)
        return ModelOutput(logits=torch.stack([attack, three[:, 1]], dim=1),
                           features={"embedding": three, "present": present, "cls_rgb": three})

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        raise ConfigError("minifasnet is an inference-only peer with released weights; it cannot be trained")


register_model("minifasnet-v2", variant="v2")(MiniFASNet)
register_model("minifasnet-v1se", variant="v1se")(MiniFASNet)

__all__ = ["CROPS", "MiniFASNet"]
