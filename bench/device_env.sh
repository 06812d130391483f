# Source on the lent GPU machine (no network there): installs the wheels carried in .whl/ (PyAV, ...)
# and vidqa itself (no dependencies: the machine's torch/transformers are used) into /tmp/site.
# PYTHONSAFEPATH keeps the checkout's vidqa/ folder (not a whole package: vlm/ etc. sit beside it)
# from shadowing the installed package.
#   source bench/device_env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site . \
  && export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
  && python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__, torch.cuda.get_device_name())"
