"""The point cache lives in the user cache directory (XDG), stays under its size limit, and
`kvnand cache info|clear` show and empty it."""

from __future__ import annotations

import os

from kvnand.study import cache as cache_mod


def test_root_is_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("KVNAND_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.cache_root() == tmp_path / "xdg" / "kvnand"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_mod.cache_root() == tmp_path / "home" / ".cache" / "kvnand"
    monkeypatch.setenv("KVNAND_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_mod.cache_root() == tmp_path / "mine"


def test_prune_drops_the_oldest_entries_beyond_the_limit(tmp_path):
    c = cache_mod.Cache(tmp_path)
    for i in range(5):
        c.put(f"k{i}", {"x": "y" * 1000})
        os.utime(c.dir / f"k{i}.json", (1000 + i, 1000 + i))
    assert cache_mod.usage(tmp_path)[0] == 5
    assert cache_mod.prune(tmp_path, limit=2500) == 3
    assert sorted(p.stem for p in c.dir.glob("*.json")) == ["k3", "k4"]


def test_report_uses_the_cache_from_any_directory_and_clear_empties_it(kvnand_cli, tmp_path, monkeypatch):
    args = ("report", "--systems", "kvnand-c16", "--models", "llama2-7b", "--contexts", "1k", "--format", "json")
    assert kvnand_cli(*args)[0] == 0
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the same cache answers
    _, _, err = kvnand_cli(*args)
    assert "1 from cache" in err and not (tmp_path / ".kvnand-cache").exists()
    code, out, _ = kvnand_cli("cache", "info")
    assert code == 0 and "1 point(s)" in out
    code, out, _ = kvnand_cli("cache", "clear")
    assert code == 0 and "removed 1" in out and cache_mod.usage()[0] == 0


def test_bad_limit_is_a_clear_error(kvnand_cli, monkeypatch):
    monkeypatch.setenv("KVNAND_CACHE_MAX_MB", "lots")
    code, _, err = kvnand_cli("cache", "info")
    assert code == 2 and "KVNAND_CACHE_MAX_MB" in err and "Traceback" not in err
