# Source on the lent GPU machine (no network there): installs the wheels carried in .whl/ (PyAV, ...)
# and vidqa itself (no dependencies: the machine's torch/transformers are used) into /tmp/site;
# VIDQA_ASSETS points the installed copy at this checkout's assets/ (its bundled model), not its own.
# PYTHONSAFEPATH keeps the checkout's vidqa/ folder (not a whole package: vlm/ etc. sit beside it)
# from shadowing the installed package.
#   source bench/device_env.sh
# .whl/ is not in git; fill it on the machine that sends the tree (carry [".whl"]):
#   pip download av==18.1.0 --no-deps --only-binary :all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .whl
# A wheel may instead come unpacked and xz-compressed (a third smaller, which leaves room in the
# 64 MiB carried tree for a checkpoint): carry [".device-carry"] with
#   mkdir w && (cd w && unzip -q ../av-*.whl && tar -cf - . | xz -9) > .device-carry/whl/av.tar.xz
_vidqa_install_wheels() {
  mkdir -p /tmp/site || return 1
  for w in .whl/*.whl; do
    if [ -e "$w" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$w" || return 1
    fi
  done
  for t in .device-carry/whl/*.tar.xz; do
    if [ -e "$t" ]; then tar -xJf "$t" -C /tmp/site || return 1; fi
  done
}
_vidqa_install_wheels \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site . \
  && export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 VIDQA_ASSETS="$PWD/assets" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
  && python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__, torch.cuda.get_device_name())"
