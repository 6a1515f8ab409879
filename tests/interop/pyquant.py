"""Quantize with the Python glq on the CPU (interop part b): its CLI, with the calibration text
taken from a local file instead of the Hugging Face hub (a stand-in `datasets` module).

  pyquant.py TEXTFILE -- <glq quantize_model arguments>
"""
import importlib.machinery
import sys
import types


def main():
    text_path = sys.argv[1]
    args = sys.argv[sys.argv.index("--") + 1:]
    lines = open(text_path, encoding="utf-8").read().split("\n")[:4000]
    import glq.quantize_model as qm  # imports transformers first (it probes `datasets` itself)
    ds = types.ModuleType("datasets")
    ds.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    ds.load_dataset = lambda *a, **k: {"text": lines}
    sys.modules["datasets"] = ds
    sys.argv = ["glq-quantize"] + args
    qm.main()


if __name__ == "__main__":
    main()
