"""Pretraining loops that produce saved artifacts agents load: ContextWM video world models (`contextwm`) and
V-PTR's ICVF video value functions (`vptr`), with their shared run-folder/checkpoint machinery (`common`).

(OC-GFN pretraining lives in `rlpt.gfn`.) Model classes live in `rlpt.nets`; this package holds only losses and
training loops, and never imports agents.
"""

from rlpt.pretrain.contextwm import VideoWorldModel, WorldModelConfig, load_pretrained, pretrain

__all__ = ["VideoWorldModel", "WorldModelConfig", "load_pretrained", "pretrain"]
