"""Where the shipped presets live (overridable with KVNAND_CONFIGS for out-of-tree preset sets)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ROOT = Path(os.environ.get("KVNAND_CONFIGS", REPO_ROOT / "arch_configs"))
VALIDATION_ROOT = REPO_ROOT / "validation"
DSE_ROOT = REPO_ROOT / "dse"
