"""The on-disk cache of evaluated points: one JSON file per point under `<cache root>/report/`, the root
being the user cache directory (XDG) unless $KVNAND_CACHE_DIR says otherwise. The cache is kept under a size
limit (oldest entries go first; `kvnand cache clear` empties it).

The key hashes everything a result depends on: the system name and its resolved tree (presets merged,
`--set` overrides applied), the parsed model, context, precision, mode, the kvnand version and a hash of
the package sources, so editing the code or a preset invalidates old entries. The tree is hashed before
unit parsing and validation, so a fully cached rerun never starts pint or pydantic. Each entry is written
atomically as soon as it is computed, so an interrupted sweep resumes where it stopped and concurrent runs
sharing the cache never read a half-written entry; an entry that cannot be read is recomputed and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import kvnand
from kvnand.errors import InputError
from kvnand.io import write_text
from kvnand.paths import CONFIG_ROOT, cache_root

# ---------------------------------------------------------------------- size limit and clearing
DEFAULT_MAX_MB = 500


def max_bytes() -> int:
    """The cache's size limit: $KVNAND_CACHE_MAX_MB megabytes (default 500)."""
    from kvnand.errors import InputError

    raw = os.environ.get("KVNAND_CACHE_MAX_MB", str(DEFAULT_MAX_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1
    if not mb >= 0:
        raise InputError("not a size in MB", key="KVNAND_CACHE_MAX_MB", value=raw, allowed="a number >= 0")
    return int(mb * 1e6)


def _entries(root: Path | None = None) -> list[Path]:
    return sorted((root or cache_root()).glob("report/*.json"))


def usage(root: Path | None = None) -> tuple[int, int]:
    """(entries, bytes) of the cache."""
    sizes = [p.stat().st_size for p in _entries(root)]
    return len(sizes), sum(sizes)


def prune(root: Path | None = None, limit: int | None = None) -> int:
    """Remove the oldest entries until the cache is within its limit; returns how many were removed."""
    limit = max_bytes() if limit is None else limit
    files = [(p.stat().st_mtime, p.stat().st_size, p) for p in _entries(root)]
    total, removed = sum(f[1] for f in files), 0
    for _, size, p in sorted(files):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total, removed = total - size, removed + 1
    return removed


def clear(root: Path | None = None) -> int:
    """Remove every entry; returns how many."""
    files = _entries(root)
    for p in files:
        p.unlink(missing_ok=True)
    return len(files)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    h = hashlib.sha256(kvnand.__version__.encode())
    pkg = Path(kvnand.__file__).parent
    # global constants and the shipped KV policies live outside the system tree
    extra = [CONFIG_ROOT / "calibration.yaml", *sorted((CONFIG_ROOT / "kv_policies").glob("*.yaml"))]
    for f in sorted(pkg.rglob("*.py")) + [p for p in extra if p.is_file()]:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _canonical(obj) -> str:
    # sets (e.g. ModelSpec.bias_on) are sorted so the key does not depend on PYTHONHASHSEED
    return json.dumps(obj, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))


class Cache:
    """get/put of result records by point; `enabled=False` makes every lookup a miss and stores nothing."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.dir = (root or cache_root()) / "report"
        self.enabled = enabled
        self.hits = 0

    def key(self, system: str, model: str, context: int, precision: str | None, mode: str,
            overrides: dict, refresh: str | None = None, decode: dict | None = None) -> str:
        """`decode`: the batch and speculative decoding keywords of the point (None: a plain step)."""
        if not self.enabled:
            return ""  # nothing is stored or looked up: skip the resolve and hash
        from kvnand.config.loader import apply_overrides, is_policy_key, resolve_system_tree  # pydantic: only
        from kvnand.workload.kv_policy import resolve_policy  # when a key is made
        from kvnand.workload.model import load_model

        tree, src = resolve_system_tree(system.removesuffix(":auto"))
        tree = apply_overrides(tree, overrides, src.default_file)
        spec = dataclasses.asdict(load_model(model))
        point = {"system": system, "tree": tree, "overrides": overrides, "model": spec, "context": context,
                 "precision": precision, "mode": mode, "refresh": refresh, "code": code_fingerprint()}
        if any(is_policy_key(k) for k in overrides):  # a policy file's contents, not just its name or path
            point["kv_policy"] = resolve_policy(overrides).model_dump()
        if decode is not None:
            draft = decode.get("spec_draft")
            point["decode"] = {**decode, "draft": dataclasses.asdict(load_model(draft)) if draft else None}
        return hashlib.sha256(_canonical(point).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        if not self.enabled:
            return None
        try:
            record = json.loads((self.dir / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # absent, or damaged by something other than us: recompute
            return None
        if not isinstance(record, dict):  # valid JSON but not a record (a foreign or damaged file)
            return None
        self.hits += 1
        return record

    def put(self, key: str, record: dict) -> None:
        if not self.enabled:
            return
        try:
            write_text(self.dir / f"{key}.json", json.dumps(record))
        except InputError:  # a cache that cannot be written (read-only, full) only costs speed: stop using it
            self.enabled = False
