"""bench/kernels.py --smoke (with --profile) runs on CPU: the reference path, the table, the profile."""

from bench_scripts import load_bench


def test_smoke_with_profile_prints_table_and_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    text = load_bench("kernels").main(["--smoke", "--profile"])
    assert "| 1,024 | 1 |" in text and "graph (ms)" in text
    assert "Top ops by self CPU time" in text
    assert '"event_ms"' in text and '"host_wall_ms"' in text
    assert (tmp_path / "kernels_cpu_profile.txt").read_text().startswith("# block_attention decode profile")
    assert not (tmp_path / "kernels_cpu.md").exists()  # smoke tables are printed, not written
    assert "Top ops by self CPU time" in capsys.readouterr().out


def test_sweep_grids_hold_the_defaults():
    """The sweep measures the knobs the op runs with by default, so its best is never worse."""
    from vidqa.kernels.block_attention.triton_impl import DEFAULT_KNOBS

    bench = load_bench("kernels")
    assert DEFAULT_KNOBS["decode"] in bench.SWEEP[1]
    assert DEFAULT_KNOBS["prefill"] in bench.SWEEP[128]
