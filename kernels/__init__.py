"""Kernels for the hot paths, each a folder with ``naive.py`` (reference, CPU path), ``triton_impl.py``
and one public function: :mod:`.quant`, :mod:`.block_attention`, :mod:`.block_score`,
:mod:`.token_match`. Importing this package never imports Triton."""
