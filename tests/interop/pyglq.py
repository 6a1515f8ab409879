"""Python side of `make test-interop`: loads a checkpoint with the Python glq through transformers
and writes its logits for a token list, or reports that the load was refused.

  pyglq.py logits DIR IDS.json OUT.f32     -> prints "ok" or "REFUSED: <message>" (exit 0 either way)
  pyglq.py modlogits DIR IDS.json OUT.f32  -> the same, decoded by glq's own modules without
                                              transformers' quantized loading (see modlogits)
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


def module_model(d):
    """glq's own decode without transformers' quantized loading, on the CPU in f32. glq 0.8.16
    cannot load trellis checkpoints through transformers 4.57 / 5.25 (it registers trellis_packed
    0-size and resizes it only off the meta device, so the meta-device load fails with a size
    mismatch) -- its own files included. This builds the dense model from config.json, puts glq's
    E8RHTLinear (the checkpoint's codebook) at each quantized module, loads its tensors with the
    module's own state-dict hook (all at once), then lets glq's quantizer attach the codebooks as
    after a transformers load. Also the reference for glq 0.2.7's 3/4-bit files: its hook injects a
    zero Qidxs2 whenever a call's state dict lacks one, and transformers 4.57 loads one tensor per
    call, so its own transformers load drops every stage 2."""
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from glq import hf_integration as hi
    from glq.quantized_linear import E8RHTLinear
    cfg = AutoConfig.from_pretrained(d)
    qc = dict(cfg.quantization_config)
    del cfg.quantization_config
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32) if transformers.__version__ >= "4.56" \
        else AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    sd = load_file(os.path.join(d, "model.safetensors"))
    names = {k.rsplit(".", 1)[0] for k in sd if k.endswith((".Qidxs", ".trellis_packed"))}
    # the dense tensors first: loading them later would run glq's state-dict hook on its modules
    # with their tensors absent (glq 0.2.7's then zeroes Qidxs2 and inv_resid_scale)
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()
                       if not any(k.startswith(n + ".") for n in names)}, strict=False)
    cb = qc.get("codebook", "e8_shell")
    # glq >= 0.8: the transform and codebook as its loader picks them; glq 0.2.7 knows neither
    kw = {"block_diagonal": hi._detect_block_diagonal(d) and cb != "e8p", "codebook_type": cb} \
        if hasattr(hi, "_detect_block_diagonal") else {}
    for name in sorted(names):
        old = m.get_submodule(name)
        new = E8RHTLinear(old.in_features, old.out_features, bias=old.bias is not None, **kw)
        pre = name + "."
        r = new.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}, strict=False)
        if r.unexpected_keys:
            raise RuntimeError("%s: unexpected %s" % (name, r.unexpected_keys))
        m.set_submodule(name, new)
    m.tie_weights()
    hi.GLQQuantizer(hi.GLQConfig(**qc))._process_model_after_weight_loading(m)
    return m.eval()


def modlogits(d, ids_path, out):
    """The logits of module_model(d): glq's decode without transformers' quantized loading."""
    import numpy as np
    import torch
    try:
        m = module_model(d)
        ids = json.load(open(ids_path))
        with torch.no_grad():
            lg = m(torch.tensor([ids])).logits[0].float().numpy()
    except ImportError as e:
        print("ERROR: " + str(e))
        return
    except Exception as e:
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
    if sys.argv[1] in ("logits", "modlogits"):
        (logits if sys.argv[1] == "logits" else modlogits)(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3], int(sys.argv[4])))
