"""Python side of `make test-interop`: loads a checkpoint with the Python glq through transformers
and writes its logits for a token list, or reports that the load was refused.

  pyglq.py logits DIR IDS.json OUT.f32     -> prints "ok" or "REFUSED: <message>" (exit 0 either way)
  pyglq.py compare OURS.f32 THEIRS.f32 VOCAB -> prints "exact ..." or "WRONG ..." (exit 0 / 1)
"""
import json
import os
import sys


def logits(d, ids_path, out):
    import numpy as np
    import torch
    import transformers
    try:
        import glq.hf_integration  # noqa: F401  registers quant_method "glq"
        if os.environ.get("GLQ_INTEROP_TRUST_CONFIG") == "1" and hasattr(glq.hf_integration, "_detect_block_diagonal"):
            # reference decode of glq's own files: its loader picks the transform from one tensor's
            # shape and misreads toy dims (stories260K: 64 rows -> pow2); the file's config says
            cfg = json.load(open(os.path.join(d, "config.json"))).get("quantization_config", {})
            glq.hf_integration._detect_block_diagonal = lambda p: bool(cfg.get("block_diagonal"))
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32) if transformers.__version__ >= "4.56" \
            else AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
        m.eval()
        ids = json.load(open(ids_path))
        with torch.no_grad():
            lg = m(torch.tensor([ids])).logits[0].float().numpy()
    except ImportError as e:  # a broken environment is not a refusal
        print("ERROR: " + str(e))
        return
    except Exception as e:  # a refusal: any error raised while loading or running
        msg = (type(e).__name__ + ": " + str(e)).replace("\n", " ")
        print("REFUSED: " + msg[:300])
        return
    np.ascontiguousarray(lg, dtype=np.float32).tofile(out)
    print("ok")


def compare(a_path, b_path, vocab):
    import numpy as np
    a = np.fromfile(a_path, dtype=np.float32).reshape(-1, vocab)
    b = np.fromfile(b_path, dtype=np.float32).reshape(-1, vocab)
    if a.shape != b.shape:
        print("WRONG shapes %s vs %s" % (a.shape, b.shape))
        return 1
    ok_finite = np.isfinite(b).all()
    diff = float(np.abs(a - b).max()) if ok_finite else float("nan")
    scale = float(np.abs(a).max())
    top1 = float((a.argmax(-1) == b.argmax(-1)).mean())
    good = ok_finite and diff <= 1e-3 * scale and top1 >= 0.999
    print("%s max|dlogit| %.3g (bound %.3g) top-1 %.4f" % ("exact" if good else "WRONG", diff, 1e-3 * scale, top1))
    return 0 if good else 1


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        logits(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3], int(sys.argv[4])))
