"""Loading the scripts under bench/ in tests (they are scripts, not a package)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str):
    """``bench/<name>.py`` as a module named ``vidqa_bench_<name>`` -- never a bare top-level name such
    as ``kernels``, which HF transformers probes for its own hub kernels."""
    spec = importlib.util.spec_from_file_location(f"vidqa_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
