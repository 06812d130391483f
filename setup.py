"""Build script: maps the repository's top-level folders onto the ``vidqa`` package.

The repository root keeps the product's shape (``vlm/``, ``memory/``, ...), but each folder is
installed as a subpackage of ``vidqa`` so that no bare ``memory`` or ``kernels`` module is ever
importable (transformers probes a PyPI package named ``kernels``). Subpackages are discovered so
that adding ``kernels/<op>/`` needs no edit here.
"""

from setuptools import find_packages, setup

FOLDER_OF_PACKAGE = {
    "vidqa": "vidqa",
    "vidqa.app": "app",
    "vidqa.vlm": "vlm",
    "vidqa.tokenreduce": "tokenreduce",
    "vidqa.memory": "memory",
    "vidqa.kernels": "kernels",
}

packages = []
for package, folder in FOLDER_OF_PACKAGE.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

# assets/ (the bundled model and the demo) installs as vidqa/assets, where vidqa.vlm.loading.assets_dir
# looks, so that `--model synth-tiny` and the demo work from a wheel as from a checkout.
ASSETS = {"vidqa.assets": ["*.mp4", "*.json", "*.md"], "vidqa.assets.models": ["*/*"]}

setup(packages=packages + list(ASSETS), package_dir={**FOLDER_OF_PACKAGE, "vidqa.assets": "assets"},
      package_data=ASSETS)
