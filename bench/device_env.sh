# Source on the lent GPU machine (no network there): installs the wheels carried in .whl/ (PyAV, ...)
# and vidqa itself (no dependencies: the machine's torch/transformers are used) into /tmp/site.
# PYTHONSAFEPATH keeps the checkout's vidqa/ folder (not a whole package: vlm/ etc. sit beside it)
# from shadowing the installed package.
#   source bench/device_env.sh
# .whl/ is not in git; fill it on the machine that sends the tree (carry [".whl"]):
#   pip download av==18.1.0 --no-deps --only-binary :all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site . \
  && export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
  && python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__, torch.cuda.get_device_name())"
