"""A toy Llama for the interop checks, from stories260K's HF weights zero-padded to hidden 96 and
ffn 224: dims that are multiples of 32 (what glq 0.8.16's trellis needs) and not powers of two (what
its loader detects as block-diagonal from its first .Qidxs tensor, and what glq 0.2.7 pads to powers
of two), with stories260K's function (up to the norms' eps).

  make_toy.py STORIES_HF_DIR TOKENIZER_DIR OUT_DIR
"""
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

H, F = 96, 224


def pad(a, rows, cols=None):
    out = np.zeros((rows,) if cols is None else (rows, cols), dtype=np.float32)
    if cols is None:
        out[:a.shape[0]] = a
    else:
        out[:a.shape[0], :a.shape[1]] = a
    return out


def main(src, tokdir, out):
    cfg = json.load(open(os.path.join(src, "config.json")))
    h0 = cfg["hidden_size"]
    t = load_file(os.path.join(src, "model.safetensors"))
    o = {}
    for k, v in t.items():
        if k.endswith("norm.weight"):  # the mean of x^2 now runs over H entries
            o[k] = pad(v * np.float32(np.sqrt(h0 / H)), H)
        elif k == "model.embed_tokens.weight":
            o[k] = pad(v, v.shape[0], H)
        elif k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            o[k] = pad(v, v.shape[0], H)
        elif k.endswith("o_proj.weight"):
            o[k] = pad(v, H, v.shape[1])
        elif k.endswith(("gate_proj.weight", "up_proj.weight")):
            o[k] = pad(v, F, H)
        elif k.endswith("down_proj.weight"):
            o[k] = pad(v, H, F)
        else:
            o[k] = v
    os.makedirs(out, exist_ok=True)
    save_file(o, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    cfg.update(hidden_size=H, intermediate_size=F)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tokdir, f)):
            shutil.copy(os.path.join(tokdir, f), os.path.join(out, f))


if __name__ == "__main__":
    main(*sys.argv[1:4])
