"""bench/ingest_profile.py --smoke runs on CPU: the fused-block A/B, and both stage profiles."""

from bench_scripts import load_bench


def test_smoke_profiles_both_stages_and_compares_the_fused_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    load_bench("ingest_profile").main(["--smoke"])
    text = (tmp_path / "ingest_profile.txt").read_text()
    assert "### vision blocks, stock against fused (4 frames per call, median of 5, alternating, eager)" in text
    # on a CPU the kernels' references run, which compute the stock block's exact bits
    assert "max |difference| 0.000e+00" in text
    # on a CPU the tower is never a CUDA graph
    assert "### encode (preprocess + vision tower + merger; 0 of 4 calls replayed the tower's CUDA graph): 4 frames" in text
    assert "### prefill + offload" in text
    # the decoder A/B: both settings timed, and the fused decoder computes the stock one's states
    assert "### decoder, stock against fused (median of 5, alternating)" in text
    assert "one decoded token over 8,192 cached entries: stock" in text
    rel = float(text.split("fused last hidden states against stock: relative (Frobenius) difference ")[1].split()[0])
    assert rel < 1e-5
