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

setup(packages=packages, package_dir=FOLDER_OF_PACKAGE)
