"""Scene descriptions (Algorithm 1, Task A; Algorithm 2, lines 4-5): a Florence-2 caption
of the ego image.

``v2x-vlm describe ROOT --model DIR --out FILE.jsonl`` writes one
``{"vehicle_frame", "sequence_id", "description", "model", "task"}`` per sample. The file
is meant to be read and corrected by a person and then given to training
(``descriptions:`` in the train config) in place of the dataset's own descriptions.

Captioning goes through transformers' own Florence-2 processor and ``generate``: this is
offline data preparation, where the reference path matters more than speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import torch
from PIL import Image
from tqdm import tqdm
from transformers import AutoProcessor

from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.model.modeling import load_model

CAPTION_TASK = "<MORE_DETAILED_CAPTION>"


class SceneDescriber:
    """Captions images with a Florence-2 model directory (or hub id)."""

    def __init__(self, model, device: str = "cpu", task: str = CAPTION_TASK, max_new_tokens: int = 96):
        self.loaded = load_model(model, device)
        self.processor = AutoProcessor.from_pretrained(str(model))
        self.device = torch.device(device)
        self.task = task
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def describe(self, images_bgr: list) -> list[str]:
        pil = [Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)) for im in images_bgr]
        inputs = self.processor(text=[self.task] * len(pil), images=pil, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        config = self.loaded.model.generation_config
        out = self.loaded.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False,
            no_repeat_ngram_size=3,  # captions, unlike trajectories, must not loop
            eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
            decoder_start_token_id=config.decoder_start_token_id,
        )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def describe_dataset(dataset, describer: SceneDescriber, out_path, batch_size: int = 8,
                     progress: bool = True) -> int:
    """Caption every sample's ego image into ``out_path`` (JSONL); returns the count."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    bar = tqdm(total=len(dataset), desc="describe", unit="image", disable=not progress)
    with open(out, "w", encoding="utf-8") as fh, bar:
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            texts = describer.describe([load_image(s.ego_image_path) for s in samples])
            for s, text in zip(samples, texts):
                fh.write(json.dumps({"vehicle_frame": s.vehicle_frame, "sequence_id": s.sequence_id,
                                     "description": text, "model": describer.loaded.source,
                                     "task": describer.task}) + "\n")
            written += len(samples)
            bar.update(len(samples))
    return written
