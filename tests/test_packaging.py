"""The wheel carries the bundled model and the demo, so that ``--model synth-tiny`` works from a
plain (not editable) install as it does from a checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _source_copy(dest: Path) -> Path:
    """What the build reads, copied, so that setuptools' build/ and egg-info stay out of the checkout."""
    dest.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for folder in ("vidqa", "app", "vlm", "tokenreduce", "memory", "kernels", "assets"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_wheel_install_finds_the_bundled_model(tmp_path):
    source = _source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("vidqa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"):
        assert f"vidqa/assets/models/synth-tiny/{name}" in names
    assert {"vidqa/assets/demo.mp4", "vidqa/assets/demo_questions.json"} <= names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                    str(site), str(wheel)], check=True, cwd=tmp_path)
    # The installed copy first on the path, the checkout off it: the model must come from the wheel.
    env = {k: v for k, v in os.environ.items() if k != "VIDQA_ASSETS"}
    env.update(PYTHONPATH=str(site), PYTHONSAFEPATH="1")
    found = subprocess.run([sys.executable, "-c", "from vidqa.vlm.loading import resolve_model_path; "
                            "print(resolve_model_path('synth-tiny'))"],
                           check=True, cwd=tmp_path, env=env, capture_output=True, text=True).stdout.strip()
    assert Path(found) == site / "vidqa" / "assets" / "models" / "synth-tiny"
