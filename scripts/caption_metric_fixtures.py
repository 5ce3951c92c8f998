"""Reference BLEU-1..4 and CIDEr-D values from the coco-caption scorers (pycocoevalcap) on a few
hand-written captions, for the Rust implementation's tests. Captions are given already
tokenised (lower case, space separated), so the Java PTB tokenizer is not needed.

    pip install pycocoevalcap
    python3 scripts/caption_metric_fixtures.py
"""
import json
import os

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

gts = {
    "1": ["a large red circle on a gray background", "there is a large red circle in front of a gray wall"],
    "2": ["a small blue square left of a green triangle", "on a black background a small blue square and a green triangle"],
    "3": ["a man riding a horse on a beach", "a person rides a brown horse along the sea", "horse and rider on the sand"],
    "4": ["two dogs playing in the snow", "a pair of dogs run through snow", "dogs in a snowy field"],
}
res = {
    "1": ["a large red circle on a black background"],
    "2": ["a small blue square and a green triangle"],
    "3": ["a man rides a horse on the beach"],
    "4": ["a cat sleeping on a sofa"],
}

bleu, _ = Bleu(4).compute_score(gts, res)
cider, cider_per = Cider().compute_score(gts, res)
out = {"references": gts, "candidates": res, "bleu": bleu, "cider": cider, "cider_per_image": list(map(float, cider_per))}
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "metrics")
os.makedirs(root, exist_ok=True)
with open(os.path.join(root, "caption_scores.json"), "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps({"bleu": bleu, "cider": cider}))
