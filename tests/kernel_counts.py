"""Counting the kernel calls a fused forward makes (shared by the fused-forward tests)."""


def count_kernel_calls(monkeypatch, module, names=("add_rms_norm", "rotary_qk", "silu_mul")) -> dict:
    """Wraps the functions ``names`` as ``module`` calls them, counting the calls; returns the counts."""
    counts = {name: 0 for name in names}

    def counted(name):
        fn = getattr(module, name)

        def inner(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return inner

    for name in names:
        monkeypatch.setattr(module, name, counted(name))
    return counts
