"""Saving and loading a `VideoMemory`: safetensors + a JSON manifest, atomic, verified.

Layout of one saved memory (a folder)::

    <dir>/manifest.json    format version, model, video fingerprint, config key, per-block metadata,
                           sha256 and byte size of kv.safetensors
    <dir>/kv.safetensors   sinks and every block's keys/values/summary/visual mask/frames and its
                           grid record (``b<i>.g.*``: grid t, frame, time, mean embedding, per-entry t, mean keys,
                           most distinct keys and their grids)

Format 2 added the grid records (the question-aware budget scores them at ask time), format 3 their
mean keys (what block retrieval scores), format 4 their most distinct keys; an older memory is refused like any stale one and rebuilt
by the caller.

Writes go to a temporary folder beside the target and are moved into place with one
``os.replace``, under a file lock, so two processes ingesting the same video leave one valid memory
and a reader never sees a half-written one. Reads check the version, the size and the checksum:
anything off raises :class:`~vidqa.errors.CacheError`, and callers rebuild instead of trusting it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from vidqa.errors import CacheError
from vidqa.memory.blocks import GridRecord, KVBlock, VideoMemory
from vidqa.memory.storage import StoredKV

FORMAT_VERSION = 4
GRID_FIELDS = ("t", "frame", "time", "embeds", "entry_t")
KEY_FIELDS = ("keys", "distinct_keys", "distinct_grid")  # optional: absent from hand-built records
MANIFEST, TENSORS = "manifest.json", "kv.safetensors"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_memory(memory: VideoMemory, target: Path) -> Path:
    """Writes ``memory`` to the folder ``target`` atomically (see module docstring)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"sink.k": memory.sink_keys.contiguous(), "sink.v": memory.sink_values.contiguous()}
    blocks_meta = []
    for i, b in enumerate(memory.blocks):
        tensors.update(b.keys.tensors(f"b{i}.k."))
        tensors.update(b.values.tensors(f"b{i}.v."))
        tensors[f"b{i}.summary"] = b.summary.contiguous()
        tensors[f"b{i}.visual"] = b.visual.to(torch.uint8).contiguous()
        tensors[f"b{i}.frames"] = b.frames.contiguous()
        meta = dict(keys=b.keys.meta(), values=b.values.meta(), start=b.start, end=b.end,
                    t_start=b.t_start, t_end=b.t_end, tokens_before_reduction=b.tokens_before_reduction)
        if b.grids is not None:
            tensors.update({f"b{i}.g.{name}": getattr(b.grids, name).contiguous() for name in GRID_FIELDS})
            for name in KEY_FIELDS:
                if getattr(b.grids, name) is not None:
                    tensors[f"b{i}.g.{name}"] = getattr(b.grids, name).contiguous()
            meta["segment_starts"] = list(b.grids.segment_starts)
        blocks_meta.append(meta)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        manifest = dict(
            format=FORMAT_VERSION, model=memory.model, video=memory.video, config_key=memory.config_key,
            stats=memory.stats, next_position=memory.next_position, blocks=blocks_meta,
            tensors_sha256=file_sha256(tmp / TENSORS), tensors_bytes=(tmp / TENSORS).stat().st_size,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        with FileLock(str(target) + ".lock"):
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_memory(source: Path, expect: dict | None = None) -> VideoMemory:
    """Reads a saved memory, verifying it; ``expect`` (e.g. ``{"model": ..., "config_key": ...}``)
    must match the manifest. Raises :class:`CacheError` on anything missing, damaged or stale."""
    source = Path(source)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"saved memory at {source} has no readable manifest ({err})") from err
    if manifest.get("format") != FORMAT_VERSION:
        raise CacheError(f"saved memory at {source} has format {manifest.get('format')}, expected {FORMAT_VERSION}")
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise CacheError(f"saved memory at {source} is stale: {key} differs")
    path = source / TENSORS
    if not path.exists() or path.stat().st_size != manifest["tensors_bytes"]:
        raise CacheError(f"saved memory at {source} is truncated")
    if file_sha256(path) != manifest["tensors_sha256"]:
        raise CacheError(f"saved memory at {source} is damaged (checksum mismatch)")
    try:
        t = load_file(str(path))
        blocks = []
        for i, m in enumerate(manifest["blocks"]):
            blocks.append(KVBlock(
                keys=StoredKV.from_tensors(t, m["keys"], f"b{i}.k."),
                values=StoredKV.from_tensors(t, m["values"], f"b{i}.v."),
                visual=t[f"b{i}.visual"].bool(), summary=t[f"b{i}.summary"],
                start=m["start"], end=m["end"], t_start=m["t_start"], t_end=m["t_end"],
                frames=t[f"b{i}.frames"], tokens_before_reduction=m["tokens_before_reduction"],
                grids=GridRecord(**{name: t[f"b{i}.g.{name}"] for name in GRID_FIELDS},
                                 segment_starts=m["segment_starts"],
                                 **{name: t.get(f"b{i}.g.{name}") for name in KEY_FIELDS})
                if "segment_starts" in m else None))
        return VideoMemory(
            sink_keys=t["sink.k"], sink_values=t["sink.v"], blocks=blocks,
            next_position=manifest["next_position"], model=manifest["model"], video=manifest["video"],
            config_key=manifest["config_key"], stats=manifest["stats"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise CacheError(f"saved memory at {source} is inconsistent ({err})") from err
