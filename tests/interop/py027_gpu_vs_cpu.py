"""glq 0.2.7's CUDA path against its own CPU path, on its own checkpoints (issue #16).

Our reader decodes glq 0.2.7's files exactly as 0.2.7's modules do on the CPU; this measures
whether 0.2.7's GPU path (Triton kernels, fp16 activations and codebook, fused RHT kernels for
B <= 64, split-K and nibble-packed kernels) computes something else. No network, no pip: glq
0.2.7's source dir (and transformers, if not installed) come through PYTHONPATH.

  PYTHONPATH=GLQ027_DIR[:TRANSFORMERS_DIR] python tests/interop/py027_gpu_vs_cpu.py CKPT_DIR... \
      [--ids IDS.json] [--device cuda|cpu]

For each checkpoint (written by glq 0.2.7, e.g. .interop/work/py-0.2.7-toy-e8_shell-{2,3}bit):
  1. the model built with glq's own modules (pyglq.py's module_model, beside this file: dense
     tensors, then each quantized linear as glq's E8RHTLinear with its whole state dict, then
     glq's codebook attach), once on the CPU (f32: the reference) and once per device dtype
     (f32, f16, bf16);
  2. per quantized linear: max |dy| of its output on the CPU run's own input to it ("alone")
     and inside the device run ("in model"), relative to max |y|;
  3. logits: max |dlogit|, the harness bound 1e-3 * max |logit|, top-1 agreement;
  4. glq's transformers load of the same directory (CPU and device) against the reference.
Then synthetic SmolLM2-sized layers (random codes, 2/3/4 bits, B = 1..512) reach the kernels the
toy's small layers do not (split-K, nibble-packed codebook); and glq's quantizer run on the device
on one layer: its own reconstruction against the CPU module's decode of the codes it stored.
Without CUDA the device is the CPU (a self-test of this script: every difference must be 0).
Prints the results and exits 0; errors of a part are printed and the next part runs.
"""
import argparse
import copy
import json
import os
import sys
import traceback

import torch

LAYER_LINES = 12  # per-layer rows printed per checkpoint (the largest differences first)


def tf_dtype_kw(dtype):
    import transformers
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def environment(device):
    import transformers
    import glq
    print("torch %s, transformers %s, glq %s (%s)" % (torch.__version__, transformers.__version__,
          getattr(glq, "__version__", "?"), os.path.dirname(glq.__file__)))
    try:
        import triton
        print("triton %s" % triton.__version__)
    except ImportError:
        print("triton: absent (glq's CUDA path then decodes like its CPU path, in f32)")
    try:
        import fast_hadamard_transform  # noqa: F401
        print("fast_hadamard_transform: present (glq's FWHT uses it for every call)")
    except ImportError:
        print("fast_hadamard_transform: absent (glq's FWHT: Triton for <= 64 rows on CUDA, else PyTorch)")
    if device.type == "cuda":
        from glq import inference_kernel
        print("device: %s; glq CUDA-C extension: %s" % (torch.cuda.get_device_name(device),
              "built" if inference_kernel._try_load_cuda_ext() else "not available (Triton kernels)"))


def module_model(d, device, dtype):
    """glq's modules at each quantized linear (pyglq.py's module_model), moved to the device."""
    from glq.quantized_linear import E8RHTLinear
    from pyglq import module_model as build  # beside this file
    m = build(d)
    names = [n for n, mod in m.named_modules() if isinstance(mod, E8RHTLinear)]
    return m.to(device=device, dtype=dtype), names


def run_model(m, names, ids, device, dtype):
    """logits (f32, CPU) and each quantized linear's input and output (f32, CPU)."""
    seen = {}
    hooks = [m.get_submodule(n).register_forward_hook(
        lambda mod, inp, out, n=n: seen.__setitem__(n, (inp[0].detach().float().cpu(), out.detach().float().cpu())))
        for n in names]
    try:
        with torch.no_grad():
            logits = m(torch.tensor([ids], device=device)).logits[0].float().cpu()
    finally:
        for h in hooks:
            h.remove()
    return logits, seen


def rel(a, b):
    """max |a - b| relative to max |a| (a: the reference)."""
    return float((a - b).abs().max()) / max(float(a.abs().max()), 1e-30)


def logit_line(ref, got):
    diff = float((ref - got).abs().max())
    bound = 1e-3 * float(ref.abs().max())
    top1 = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    verdict = "exact" if diff <= bound and top1 >= 0.999 else "DIFFERENT"
    return "%-9s max|dlogit| %.3g (bound %.3g) top-1 %.4f" % (verdict, diff, bound, top1)


def checkpoint(d, ids, device):
    print("\n== %s (%d tokens)" % (d, len(ids)))
    bpw = json.load(open(os.path.join(d, "config.json"))).get("quantization_config", {}).get("bpw")
    print("quantization_config.bpw = %s" % bpw)
    ref_m, names = module_model(d, torch.device("cpu"), torch.float32)
    ref_logits, ref_seen = run_model(ref_m, names, ids, "cpu", torch.float32)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tag = "%s %s" % (device.type, str(dtype).replace("torch.", ""))
        try:
            m, _ = module_model(d, device, dtype)
            for seq in sorted({1, 16, len(ids)}):  # B=1: matvec; <=64: fused RHT kernels; >64: FWHT + TC
                lg, seen = run_model(m, names, ids[:seq], device, dtype)
                r_lg, r_seen = (ref_logits, ref_seen) if seq == len(ids) else run_model(ref_m, names, ids[:seq], "cpu", torch.float32)
                rows = []
                with torch.no_grad():
                    for n in names:
                        x, y = r_seen[n]
                        alone = m.get_submodule(n)(x.to(device=device, dtype=dtype)).float().cpu()
                        rows.append((rel(y, alone), rel(y, seen[n][1]), n))
                worst = max(rows)
                print("%-14s seq %3d  logits %s; worst linear alone %.2e (%s)" % (tag, seq, logit_line(r_lg, lg), worst[0], worst[2]))
                if dtype == torch.float32 and seq == len(ids):
                    print("  per linear, max|dy|/max|y| (f32, seq %d), largest first:" % seq)
                    for a, b, n in sorted(rows, reverse=True)[:LAYER_LINES]:
                        print("    %-40s alone %.2e  in model %.2e" % (n, a, b))
            del m
        except Exception as e:  # a part that fails is reported, the rest still runs
            print("%-14s ERROR %s: %s" % (tag, type(e).__name__, str(e).replace("\n", " ")[:300]))
    # glq's transformers load of the same directory (what a user's from_pretrained gives)
    import transformers
    import glq.hf_integration  # noqa: F401  registers quant_method "glq"
    for dev in sorted({"cpu", device.type}):
        try:
            kw = tf_dtype_kw(torch.float32)
            if dev != "cpu":
                kw["device_map"] = dev
            m = transformers.AutoModelForCausalLM.from_pretrained(d, **kw).eval()
            with torch.no_grad():
                lg = m(torch.tensor([ids], device=dev)).logits[0].float().cpu()
            print("transformers load on %-4s vs modules on cpu: %s" % (dev, logit_line(ref_logits, lg)))
            del m
        except Exception as e:
            print("transformers load on %-4s REFUSED %s: %s" % (dev, type(e).__name__, str(e).replace("\n", " ")[:200]))


def codebooks(bits, device):
    from glq.codebook import E8ShellCodebook
    cb = E8ShellCodebook.build(device=device, verbose=False)
    cb2 = None if bits == 2 else (cb if bits == 4 else cb.make_small(256))
    return cb, cb2


def synthetic_layer(out_f, in_f, bits, gen):
    from glq.quantized_linear import E8RHTLinear
    lin = E8RHTLinear(in_f, out_f)
    shape = lin.Qidxs.shape
    lin.Qidxs.copy_(torch.randint(-32768, 32768, shape, generator=gen, dtype=torch.int32).to(torch.int16))
    lin.SU.copy_((torch.randint(0, 2, lin.SU.shape, generator=gen) * 2 - 1).half())
    lin.SV.copy_((torch.randint(0, 2, lin.SV.shape, generator=gen) * 2 - 1).half())
    lin.Wscale.fill_(0.02)
    if bits > 2:
        hi = 256 if bits == 3 else 65536
        lin.Qidxs2.copy_((torch.randint(0, hi, shape, generator=gen, dtype=torch.int32) - (0 if bits == 3 else 32768)).to(torch.int16))
        lin.inv_resid_scale.fill_(1.0 / 3.0)
    return lin


def synthetic(device):
    """SmolLM2-135M's linear shapes (glq 0.2.7 pads them to 1024/2048/256), random codes."""
    print("\n== synthetic layers (SmolLM2-135M shapes, random codes; x ~ N(0,1)), max|dy|/max|y| %s f32 vs cpu f32" % device.type)
    shapes = [(576, 576, "q/o_proj"), (192, 576, "k/v_proj"), (1536, 576, "gate/up_proj"), (576, 1536, "down_proj")]
    batches = (1, 8, 96, 512)
    print("  %-14s %-4s %s" % ("layer", "bits", "  ".join("B=%-7d" % b for b in batches)))
    gen = torch.Generator().manual_seed(27)
    for out_f, in_f, what in shapes:
        for bits in (2, 3, 4):
            try:
                lin = synthetic_layer(out_f, in_f, bits, gen)
                dev = copy.deepcopy(lin).to(device)
                lin.set_codebook(*codebooks(bits, "cpu"))
                dev.set_codebook(*codebooks(bits, "cpu"))  # moved to the device by its first forward, as after a load
                cells = []
                with torch.no_grad():
                    for b in batches:
                        x = torch.randn(b, in_f, generator=gen)
                        cells.append(rel(lin(x), dev(x.to(device)).float().cpu()))
                print("  %-14s %-4d %s" % (what, bits, "  ".join("%.2e  " % c for c in cells)))
            except Exception as e:
                print("  %-14s %-4d ERROR %s: %s" % (what, bits, type(e).__name__, str(e).replace("\n", " ")[:200]))


def quantizer(device):
    """glq's quantizer on the device: its reconstruction W_hat (what its calibration forward
    propagates) against the CPU module's decode of the codes it stored."""
    from glq.quantize_model import quantize_layer_e8_shell_rht
    from glq.codebook import E8ShellCodebook, _BUNDLED_CODEBOOK
    from glq.quantized_linear import E8RHTLinear
    print("\n== glq's quantizer on %s (quantize_layer_e8_shell_rht, one 96x160 layer)" % device.type)
    try:
        cb = E8ShellCodebook(device=device.type, verbose=False)  # what glq-quantize builds
        bundled = torch.load(_BUNDLED_CODEBOOK, map_location="cpu", weights_only=True)
        same = torch.equal(cb.codebook.cpu(), bundled["codebook"].float())
        print("  enumerated codebook on %s == bundled e8_codebook.pt: %s; opt_scale %s (bundled %s), resid_scale %s (bundled %s)"
              % (device.type, same, cb.opt_scale, bundled["opt_scale"], cb.resid_scale, bundled["resid_scale"]))
    except Exception as e:
        print("  ERROR building the codebook: %s: %s" % (type(e).__name__, e))
        return
    gen = torch.Generator().manual_seed(7)
    m, n = 96, 160
    W = torch.randn(m, n, generator=gen) * 0.05
    X = torch.randn(512, n, generator=gen)
    H = X.T @ X / 512
    for bits in (2, 3, 4):
        try:
            W_hat, art, met = quantize_layer_e8_shell_rht(W.clone(), H.clone(), cb, bpw=bits)
            lin = E8RHTLinear(n, m)
            lin.load_state_dict({k: v.cpu() for k, v in art.items()}, strict=False)
            lin.set_codebook(*codebooks(bits, "cpu"))
            with torch.no_grad():
                dec = lin.dequantize()
            print("  %d-bit: quantizer's W_hat vs CPU module decode of its codes: max|d|/max|W_hat| %.2e; SQNR %.2f dB; Wscale %.5g"
                  % (bits, rel(W_hat.float().cpu(), dec), met["sqnr"], float(art["Wscale"])))
        except Exception as e:
            print("  %d-bit: ERROR %s: %s" % (bits, type(e).__name__, str(e).replace("\n", " ")[:200]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpts", nargs="*", help="checkpoint dirs written by glq 0.2.7")
    ap.add_argument("--ids", help="JSON list of token ids (default: 96 seeded random ids below the vocab size)")
    ap.add_argument("--device", default="cuda", help="device to compare with the CPU (default cuda)")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA not available: comparing the CPU with itself (a self-test: every difference must be 0)")
        device = torch.device("cpu")
    torch.manual_seed(0)  # glq's make_small draws from the global generator (its unused opt_scale)
    try:
        environment(device)
    except Exception as e:
        print("ERROR: %s: %s (is glq 0.2.7's source dir on PYTHONPATH?)" % (type(e).__name__, e))
        return
    for d in a.ckpts:
        try:
            if a.ids:
                ids = json.load(open(a.ids))
            else:
                vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
                ids = torch.randint(0, vocab, (96,), generator=torch.Generator().manual_seed(16)).tolist()
            checkpoint(d, ids, device)
        except Exception:
            print("ERROR on %s:\n%s" % (d, traceback.format_exc()))
    synthetic(device)
    quantizer(device)
    print("\ndone")


if __name__ == "__main__":
    main()
    sys.exit(0)
