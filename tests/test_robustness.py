"""Robustness of the command line against hostile environments and input: concurrent cold caches,
damaged cache files, strict JSON, bounds and strict types. The generated-input fuzzing is tests/fuzz.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _kvnand(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kvnand.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_cold_starts_share_the_unit_cache(tmp_path):
    """Several first runs at once must all succeed, and a truncated cache file must be rebuilt, not fatal."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "KVNAND_CACHE_DIR": str(tmp_path / "kc")}
    procs = [_kvnand("show-config", "kvnand-c16", env=env) for _ in range(6)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(code == 0 for code, _ in results), results
    pickles = list((tmp_path / "xdg").rglob("*.pickle"))
    assert pickles, "pint's disk cache was not used"
    for f in pickles:
        f.write_bytes(f.read_bytes()[:50])  # a run killed mid-write (before atomic writes) left this behind
    proc = _kvnand("show-config", "kvnand-c16", env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not [p for p in (tmp_path / "xdg").rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_point_cache_ignores_damaged_entries(tmp_path):
    from kvnand.report.cache import Cache

    c = Cache(tmp_path)
    c.dir.mkdir(parents=True)
    for key, text in {"a": "[1, 2]", "b": '{"x": ', "c": "null", "d": "[" * 100_000}.items():
        (c.dir / f"{key}.json").write_text(text)
        assert c.get(key) is None
    c.put("e", {"ok": 1})
    assert c.get("e") == {"ok": 1}
    assert sorted(p.name for p in Path(c.dir).iterdir()) == sorted(f"{k}.json" for k in "abcde")
