"""Where the shipped presets live (overridable with KVNAND_CONFIGS for out-of-tree preset sets), and the user's
cache directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ROOT = Path(os.environ.get("KVNAND_CONFIGS", REPO_ROOT / "arch_configs"))
VALIDATION_ROOT = REPO_ROOT / "validation"
DSE_ROOT = REPO_ROOT / "dse"


def cache_root() -> Path:
    """$KVNAND_CACHE_DIR, else the user cache directory: $XDG_CACHE_HOME/kvnand or ~/.cache/kvnand."""
    if os.environ.get("KVNAND_CACHE_DIR"):
        return Path(os.environ["KVNAND_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvnand"
