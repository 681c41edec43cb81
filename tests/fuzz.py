"""Generated bad and odd input through the whole `kvnand` command line, checked against the input contract.

    python -m tests.fuzz --n 2000 --seed 0          # from the repository root; exit 1 if any problem
    python -m tests.fuzz --n 50 --kinds model,cli   # a quick look at some families

Each generated input is a mutated shipped file (system YAML, device YAML, model config.json, DSE space,
validation case file) run through the commands that load AND evaluate it, or a command line built from
hostile option values. Mutations are mostly plausible (a quantity scaled, a count changed, a flag toggled,
an enumeration switched), so many inputs are valid by the schema and get evaluated, and partly hostile
(wrong types, NaN, 400-digit numbers, negative counts, paths that cannot be written). The contract:

- exit 0, 1 (validate: an enforced case failed; dse run: every trial failed) or 2 (bad input);
- never a traceback, never a crash or a hang;
- exit 2 prints one line `kvnand: error: ...` (or typer's usage box for a malformed command line) and leaves
  no file behind;
- exit 0/1 prints and writes standard JSON (no NaN/Infinity) and no NaN, inf or negative number in any
  result (a few keys are signed by meaning: gains, constraint violations, relative errors);
- a shipped input left unchanged (some of the generated ones) is accepted ("refused" otherwise);
- a value that can never be valid (a bool for a count, NaN, a bare number for a quantity, ...) is refused
  ("accepted" is reported, not counted as a failure: that detector is a heuristic).

Inputs run in-process in worker processes (one sandbox directory per input); a worker that dies or stops
answering is a crash or a hang and is replaced. The seeded generator makes every run reproducible;
tests/test_fuzz.py runs a small slice in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import yaml

from kvnand.config.loader import read_yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "arch_configs"
KINDS = ("system", "device", "model", "space", "validation", "cli")
SMALL_MODELS = ("llama3.1-8b", "llama2-7b", "mixtral-8x7b", "opt-6.7b")
CONTEXTS = ("128", "1k", "10k", "100k", "4Ki")
SIGNED_KEYS = re.compile(r"(^|\.)(gain|constraints|rel_error)(\.|$|\[)")
ENUMS = {
    "store": ["colocated", "flash_group", "dram", "nand", "csd"], "mapping": ["page", "naive"],
    "weights": ["flash_pe", "flash_split", "host"], "attention": ["flash_pe", "npu", "csd"],
    "prefill": ["npu", "host"], "location": ["on_die", "controller", "none"], "mode": ["SLC", "MLC", "TLC", "QLC"],
    "default_precision": ["bf16", "w8a8", "w4a16"], "precision": ["bf16", "w8a8", "w4a16", "fp8"],
    "sampler": ["tpe", "nsga2", "random", "grid"], "profile": ["continuous", "chat", "long-doc", "nosuch"],
    "status": ["enforced", "tracked", "other"], "metric": ["tokens_per_s", "latency_s", "nosuch"],
}
# values no field can take (the "silently accepted" detector), and values that are merely odd
NEVER = [float("nan"), float("inf"), -float("inf")]
HOSTILE = [0, -1, -4, 1, 3, 10**6, 2**63, 10**400, 1e-300, 1e300, True, False, None, "", "8", "true", "nan", "-4 us",
           "0.5 B", "1 bit", "1e-300 B/s", "1e300 J", "1e400 s", "9**9**9 s", "3 pJ", "1 GHz", "x" * 300, [], {},
           [1, 2], {"a": 1}, "4 KiB", "\u00b5s", "4 us\n", "{dies:>99999999}", "../../etc/passwd", "sqlite://"]
# keys of a config.json the model loader reads (any other key is allowed and ignored, as in Hugging Face)
MODEL_KEYS = ("model_type", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
              "num_hidden_layers", "vocab_size", "max_position_embeddings", "intermediate_size", "ffn_dim",
              "num_local_experts", "num_experts_per_tok", "tie_word_embeddings", "attention_bias", "mlp_bias",
              "activation_function", "do_layer_norm_before", "enable_bias", "word_embed_proj_dim")
QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S.*)$")


@dataclass
class Case:
    """One generated input: files to place in a fresh sandbox, then one or more command lines."""

    index: int
    kind: str
    steps: list[list[str]]
    files: dict[str, str | bytes] = field(default_factory=dict)
    must_fail: str = ""           # why this input can never be valid ("" if it may be)
    note: str = ""                # what was mutated
    must_pass: bool = False       # an unmutated shipped input: refusing it is a failure too
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for this input


# ------------------------------------------------------------------------------------------- mutation
def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(tree, list) and tree:
        for i, v in enumerate(tree):
            yield from _leaves(v, (*path, i))
    else:
        yield path, tree


def _set(tree, path, value):
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _plausible(rng: random.Random, key, v):
    """A value of the same kind as `v`: often valid, sometimes out of range."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice([0, 1, 2, max(1, v // 2), v * 2, v + 1, rng.randint(0, max(4, 4 * v))])
    if isinstance(v, float):
        return v * 10 ** rng.uniform(-3, 3)
    if isinstance(v, str):
        if key in ENUMS:
            return rng.choice(ENUMS[key])
        m = QUANTITY.match(v)
        if m:
            factor = 10 ** rng.choice([rng.uniform(-2, 2), rng.uniform(-9, 9)])
            return f"{float(m.group(1)) * factor:.4g} {m.group(2)}"
    return rng.choice(HOSTILE)


def _never_valid(old, new) -> str:
    """Why `new` cannot be valid where `old` was (empty when it might be)."""
    if isinstance(new, float) and not math.isfinite(new):
        return "non-finite number"
    if isinstance(old, bool) and not isinstance(new, bool) and new is not None:
        return "a non-bool for a flag"
    if isinstance(old, int) and not isinstance(old, bool) and (isinstance(new, bool) or (
            isinstance(new, str) and new.strip().lstrip("-").isdigit())):
        return "a bool or a digit string for an integer"
    if isinstance(old, str) and QUANTITY.match(old) and (isinstance(new, bool) or (
            isinstance(new, (int, float)) and not isinstance(new, bool))):
        return "a bare number for a quantity"
    return ""


def mutate(rng: random.Random, tree, n: int, hostile: float, skip=(), judged=None) -> tuple[object, str, str]:
    """`tree` with n leaves changed (and sometimes a key dropped or added); (tree, note, must_fail).
    `judged(path)`: whether a never-valid value at `path` must be refused (default: everywhere)."""
    tree = copy.deepcopy(tree)
    notes, must = [], {}  # path -> why its final value can never be valid
    for _ in range(n):
        leaves = [(p, v) for p, v in _leaves(tree) if p and not any(s in map(str, p) for s in skip)]
        if not leaves:
            break
        path, old = rng.choice(leaves)
        r = rng.random()
        if r < 0.08 and len(path) > 1:
            parent = tree
            for p in path[:-2]:
                parent = parent[p]
            if isinstance(parent, dict) and isinstance(parent.get(path[-2]), dict):
                parent[path[-2]].pop(path[-1], None)
                notes.append(f"del {'.'.join(map(str, path))}")
                continue
        if r < 0.12 and isinstance(tree, dict):
            tree[rng.choice(["pe_precision", "unknown_key", "extends", "preset"])] = rng.choice(HOSTILE)
            notes.append("added a key")
            continue
        new = rng.choice(HOSTILE + NEVER) if r < 0.12 + hostile else _plausible(rng, path[-1], old)
        _set(tree, path, new)
        if judged is None or judged(path):
            must[path] = _never_valid(old, new) if path not in must else must[path] and _never_valid(old, new)
        notes.append(f"{'.'.join(map(str, path))}: {_short(old)} -> {_short(new)}")
    return tree, "; ".join(notes), next((m for m in must.values() if m), "")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) < 40 else r[:37] + "..."


def _same(a, b) -> bool:
    """Equal as written (Python's == takes True for 1 and 1.0 for 1)."""
    return _dump(a) == _dump(b)


def _dump(tree) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10**6)


# ------------------------------------------------------------------------------------------- generators
def _system_trees() -> dict[str, dict]:
    from kvnand.config.loader import resolve_system_tree, system_names

    return {n: resolve_system_tree(n)[0] for n in system_names()}


def _preset_slots() -> list[tuple[str, tuple[str, ...], str]]:
    """(system, key path, device preset) of every `{preset: NAME}` in the shipped system files."""
    out = []
    for f in sorted((CONFIGS / "systems").glob("*.yaml")):
        for path, v in _leaves(yaml.safe_load(f.read_text())):
            if path and path[-1] == "preset":
                out.append((f.stem, tuple(map(str, path[:-1])), v))
    return out


def _eval_steps(rng: random.Random, system: str, model: str | None = None, out_dir: str | None = None,
                evaluate: bool = False) -> list[str]:
    """A command that loads and evaluates `system` (and `model`; show-config, which only loads, unless
    `evaluate`)."""
    model = model or rng.choice(SMALL_MODELS)
    ctx = rng.choice(CONTEXTS)
    r = rng.random()
    if r < 0.55:
        argv = ["report", "--systems", system, "--models", model, "--contexts", ctx, "--format", "json", "--no-cache"]
        if rng.random() < 0.25 and model in ("llama3.1-8b", "llama2-7b", "m.json"):
            argv += ["--mode", "event"]
        if out_dir and rng.random() < 0.3:
            argv += ["--out", out_dir]
        return argv
    if r < 0.8 or evaluate:
        return ["reliability", "--systems", system, "--models", model, "--contexts", ctx, "--format", "json"]
    return ["show-config", system]


def gen_system(rng, ctx, i) -> Case:
    name = rng.choice(sorted(ctx["systems"]))
    base = ctx["systems"][name]
    if rng.random() < 0.2:  # a part (or its absence) from another system: new combinations of valid parts
        other = ctx["systems"][rng.choice(sorted(ctx["systems"]))]
        part = rng.choice(["flash", "nand", "dram", "host_dram", "npu", "kv", "placement", "schedule", "link", "csd"])
        base = {**base, part: copy.deepcopy(other[part])} if part in other else \
            {k: v for k, v in base.items() if k != part}
        name = f"{name} with {part} of another system"
    tree, note, must = mutate(rng, base, rng.choice([0, 1, 1, 2, 3]), 0.2, skip=("source", "note"))
    return Case(i, "system", [_eval_steps(rng, "sys.yaml", out_dir="out")], {"sys.yaml": _dump(tree)}, must,
                f"{name}: {note}", must_pass=_same(tree, ctx["systems"].get(name)))


def gen_device(rng, ctx, i) -> Case:
    system, path, preset = rng.choice(ctx["slots"])
    raw = read_yaml(CONFIGS / "devices" / f"{preset}.yaml")[0]
    dev, note, must = mutate(rng, raw, rng.choice([0, 1, 2]), 0.2, skip=("source", "note", "kind", "schema_version"))
    part: dict = {"preset": "./dev.yaml"}
    for p in reversed(path):
        part = {p: part}
    sys_file = {"schema_version": 1, "extends": system, "name": system, **part}
    return Case(i, "device", [_eval_steps(rng, "sys.yaml")], {"sys.yaml": _dump(sys_file), "dev.yaml": _dump(dev)},
                must, f"{preset} in {system}.{'.'.join(path)}: {note}", must_pass=_same(dev, raw))


def gen_model(rng, ctx, i) -> Case:
    name = rng.choice(ctx["models"])
    text = (CONFIGS / "models" / f"{name}.json").read_text()
    data = json.loads(text)
    damaged = rng.random() < 0.15
    must, unchanged = "", False
    if damaged:  # damage the text itself
        how = rng.choice(["bom", "truncate", "deep", "bigint", "nan", "latin1", "empty", "list"])
        note = f"{name}: text {how}"
        text = {"bom": "\ufeff" + text, "truncate": text[: rng.randint(0, len(text) - 1)],
                "deep": text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                "bigint": text.replace('"vocab_size": ', '"vocab_size": ' + "9" * 5000 + "0 * ", 1),
                "nan": text.replace('"hidden_size": ', '"hidden_size": NaN, "h": ', 1),
                "latin1": text, "empty": "", "list": "[" + text + "]"}[how]
        must = "" if how in ("bom", "latin1") else f"damaged JSON ({how})"
        files = {"m.json": text.replace("}", ', "n": "caf\u00e9"}').encode("latin-1") if how == "latin1" else text}
    else:
        # a config.json may hold any other key (Hugging Face configs carry many the model ignores)
        data, note, must = mutate(rng, data, rng.choice([0, 1, 2]), 0.25, judged=lambda p: p[0] in MODEL_KEYS)
        note, unchanged = f"{name}: {note}", _same(data, json.loads(text))
        files = {"m.json": json.dumps(data, allow_nan=True)}
    r = rng.random()
    if r < 0.45:
        steps = [_eval_steps(rng, rng.choice(["kvnand-c16", "kvnand-d", "base1", "cambricon-llm-s"]), "m.json",
                             evaluate=True)]
    elif r < 0.7:
        steps = [["models", "m.json", "--format", "json"]]
    else:
        steps = [["graph", "m.json", "--context", str(rng.choice([1, 1000, 100_000])),
                  *(["--output", "g.graphml"] if rng.random() < 0.5 else [])]]
    return Case(i, "model", steps, files, must, note, must_pass=unchanged)


def gen_space(rng, ctx, i) -> Case:
    raw = read_yaml(REPO / "dse" / "smoke.yaml")[0]
    raw["parameters"]["planes_per_die"] = {"choices": [16, 32], "default": 32}  # keep trials quick
    tree, note, must = mutate(rng, raw, rng.choice([0, 1, 1, 2]), 0.3, skip=("description", "source"))
    must = must if must != "a bare number for a quantity" else ""  # a space's scalars are not quantities
    if rng.random() < 0.15:  # a space small enough for grid mode
        raw["parameters"].update(planes_per_die=32, g2_dies={"int": [3, 4], "when": {"variant": "D"}, "default": 4},
                                 precision={"choices": ["w8a8", "w4a16"], "default": "w8a8"})
        raw["known_designs"] = [{"label": "KVNAND-D-({g1_dies}+{g2_dies})", "params": {"variant": "D", "g2_dies": 4}}]
        tree, note, must = mutate(rng, raw, rng.choice([0, 1]), 0.3, skip=("description", "source"))
        return Case(i, "space", [["dse", "grid", "space.yaml", "--out", "o"]], {"space.yaml": _dump(tree)},
                    must if must != "a bare number for a quantity" else "", f"grid: {note}", must_pass=_same(tree, raw))
    r = rng.random()
    run = ["dse", "run", "space.yaml", "--trials", str(rng.choice([1, 2, 3])), "--out", "o"]
    if r < 0.15:
        run += ["--seed", str(rng.choice([-1, 0, 2**32 - 1, 2**32, 10**30]))]
    elif r < 0.2:
        run += ["--storage", rng.choice(["sqlite:///:memory:", "sqlite://", "nosuch://x", "sqlite:///o2/s.db",
                                         "sqlite:///space.yaml", "sqlite:///no/such/dir/s.db", "o2/s.journal",
                                         "space.yaml", "no/such/dir/s.journal"])]
    elif r < 0.25:
        run[run.index("--out") + 1] = rng.choice(["space.yaml", "/proc/x", "a" * 300])
    steps = [run]
    if rng.random() < 0.3:
        steps.append(["dse", "pareto", "--storage", "o/study.journal", "--study", str(tree.get("name", "smoke")),
                      "--format", rng.choice(["json", "csv"])])
    return Case(i, "space", steps, {"space.yaml": _dump(tree)}, must, note, must_pass=_same(tree, raw) and r >= 0.25)


def gen_validation(rng, ctx, i) -> Case:
    f = rng.choice(sorted((REPO / "validation" / "cases").glob("*.yaml")))
    raw = read_yaml(f)[0]
    raw["cases"] = rng.sample(raw["cases"], min(len(raw["cases"]), 2))
    tree, note, must = mutate(rng, raw, rng.choice([0, 1, 2]), 0.25, skip=("source", "note"))
    must = must if must != "a bare number for a quantity" else ""
    return Case(i, "validation", [["validate", "--cases", "cases.yaml", "--format", rng.choice(["json", "table"])]],
                {"cases.yaml": _dump(tree)}, must, f"{f.name}: {note}", must_pass=_same(tree, raw))


def _set_option(rng, ctx) -> tuple[str, str, str]:
    """A --set KEY=VALUE of a real key with a plausible or hostile value: (system, KEY=VALUE, must_fail)."""
    name = rng.choice(sorted(ctx["systems"]))
    leaves = [(p, v) for p, v in _leaves(ctx["systems"][name]) if p and p[-1] not in ("source", "note")]
    path, old = rng.choice(leaves)
    key = ".".join(map(str, path))
    new = rng.choice(HOSTILE + NEVER) if rng.random() < 0.5 else _plausible(rng, path[-1], old)
    text = json.dumps(new) if isinstance(new, (list, dict)) else ("null" if new is None else str(new))
    if isinstance(new, float) and not math.isfinite(new):
        text = rng.choice([".nan", "nan", ".inf", "inf", "-.inf"])
    try:
        as_read = yaml.safe_load(text)  # what --set makes of the text
    except yaml.YAMLError:
        as_read = text
    return name, f"{key}={text}", _never_valid(old, as_read)


def gen_cli(rng, ctx, i) -> Case:
    system = rng.choice(sorted(ctx["systems"]))
    r = rng.random()
    hostile_ctx = ["-5", "0", "1" * 400, "1e9", "1.5", "10k,", "abc", "1000000001", "1Mi", "true"]
    if r < 0.3:
        name, kv, must = _set_option(rng, ctx)
        return Case(i, "cli", [_eval_steps(rng, name) + ["--set", kv]], must_fail=must, note=f"--set {kv}")
    if r < 0.36:  # the derived `dies`, the auto split, event mode
        sets = [f"dies={rng.choice([1, 2, 4, 8, 16, 24, 64, 0, -8, 4096, 10**6, 'x', 'true', 8.5])}"]
        if rng.random() < 0.6:
            sets.append(f"g2_dies={rng.choice([0, 1, 2, 4, 7, 8, 15, -1])}")
        if rng.random() < 0.4:
            sets.append(f"channels={rng.choice([1, 2, 4, 8, 16, 0, 3])}")
        argv = ["report", "--systems", rng.choice(["kvnand-d", "kvnand-d:auto", "kvnand-c16", "base1"]), "--models",
                rng.choice(SMALL_MODELS), "--contexts", rng.choice(CONTEXTS), "--format", "json", "--mode",
                rng.choice(["fast", "fast", "event"])]
        for kv in sets:
            argv += ["--set", kv]
        return Case(i, "cli", [argv], note=" ".join(sets))
    if r < 0.45:
        key = rng.choice(["profile.tokens_per_s", "profile.years", "profile.hours_per_day", "profile.turns",
                          "profile.output_tokens", "refresh.read_fraction", "refresh.uber_target",
                          "refresh.retention_years", "refresh.trigger", "profile.nosuch"])
        value = str(rng.choice(["nan", "inf", "-1", "0", "2", "1e-300", "1e300", "1" * 400, "rber", "reads", "0.5",
                                "10", "none", "true"]))
        return Case(i, "cli", [["reliability", "--systems", system, "--models", rng.choice(SMALL_MODELS),
                                "--contexts", rng.choice(CONTEXTS), "--format", "json", "--set", f"{key}={value}"]],
                    must_fail="non-finite number" if value in ("nan", "inf") else "", note=f"--set {key}={value}")
    if r < 0.6:
        env = {"KVNAND_CACHE_DIR": rng.choice(["/proc/x", "f.txt", "f.txt/sub", "a" * 300])} if r < 0.53 else {}
        return Case(i, "cli", [["report", "--systems", system, "--models", rng.choice(SMALL_MODELS), "--contexts",
                                rng.choice(hostile_ctx + list(CONTEXTS)), "--format", rng.choice(["json", "csv"])]],
                    {"f.txt": "x"}, note=f"contexts {env}", env=env)
    if r < 0.75:
        option = rng.choice(["--out", "--plot", "--trace"])
        target = rng.choice(["/proc/x", "/proc/x/y.png", ".", "f.txt", "f.txt/y.png", "a" * 300 + ".png",
                             "new/dir/x.png", "x.svg", "x.json", "/dev/null/x.png"])
        return Case(i, "cli", [["report", "--systems", system, "--models", "llama3.1-8b", "--contexts", "1k",
                                option, target]], {"f.txt": "x"}, note=f"{option} {target}")
    if r < 0.85:
        target = rng.choice(["/tmp", ".", "/proc/x", "f.txt", "a" * 300 + ".graphml", "g.graphml", "no/such/g.graphml"])
        return Case(i, "cli", [["graph", rng.choice(SMALL_MODELS), "--context", rng.choice(["-5", "0", "1000", "1"]),
                                *(["--output", target] if rng.random() < 0.7 else [])]], {"f.txt": "x"},
                    note=f"graph {target}")
    if r < 0.9:
        storage = rng.choice(["sqlite:///nope.db", "sqlite:///f.txt", "sqlite://", "sqlite:///:memory:", "nosuch://x",
                              "sqlite:///" + "a" * 300 + ".db", "postgresql://nobody@127.0.0.1:1/x"])
        return Case(i, "cli", [["dse", "pareto", "--storage", storage, "--study", "s", "--format", "json"]],
                    {"f.txt": "x"}, note=f"pareto {storage}")
    model = rng.choice(["x" * 300, "no/such.json", "", "llama3.1-8b,", " ", "a" * 5000, "\x00"])
    return Case(i, "cli", [["models", model, "--format", "json"]], note="model name")


GENERATORS = {"system": gen_system, "device": gen_device, "model": gen_model, "space": gen_space,
              "validation": gen_validation, "cli": gen_cli}


def generate(n: int, seed: int, kinds=KINDS) -> list[Case]:
    from kvnand.workload.model import zoo_names

    rng = random.Random(seed)
    ctx = {"systems": _system_trees(), "slots": _preset_slots(), "models": zoo_names()}
    weights = {"system": 4, "device": 2, "model": 3, "space": 1.2, "validation": 1, "cli": 3}
    kinds = list(kinds)
    return [GENERATORS[k](rng, ctx, i) for i, k in
            enumerate(rng.choices(kinds, [weights[k] for k in kinds], k=n))]


# ------------------------------------------------------------------------------------------- one input
class _Timeout(BaseException):  # not an Exception: code under test that catches Exception must not swallow it
    pass


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _bad_numbers(obj, path="") -> list[str]:
    """Non-finite or negative numbers in a parsed JSON document (keys signed by meaning excepted)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _bad_numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for j, v in enumerate(obj):
            out += _bad_numbers(v, f"{path}[{j}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if not math.isfinite(obj):
            out.append(f"non-finite {path}={obj}")
        elif obj < 0 and not SIGNED_KEYS.search(path):
            out.append(f"negative {path}={obj}")
    return out


_TEXT_BAD = re.compile(r"(?<![\w.'\"/-])(nan|NaN|inf|-inf|Infinity)(?![\w'\"])")  # a number, not a name


def run_case(case: dict, sandbox: Path, timeout: float) -> dict:
    """Run every step of a case in `sandbox` (in this process) and return what was observed."""
    sandbox.mkdir(parents=True)
    for name, content in case["files"].items():
        if isinstance(content, bytes):
            (sandbox / name).write_bytes(content)
        else:
            (sandbox / name).write_text(content, encoding="utf-8")
    os.chdir(sandbox)
    saved = {k: os.environ.get(k) for k in case["env"]}
    os.environ.update(case["env"])
    try:
        return _run_steps(case, sandbox, timeout)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_steps(case: dict, sandbox: Path, timeout: float) -> dict:
    from kvnand import cli

    res = {"index": case["index"], "problems": [], "codes": [], "stderr": ""}
    for argv in case["steps"]:
        before = {p for p in sandbox.rglob("*")}
        out, err = io.StringIO(), io.StringIO()
        # input files by absolute path: in-process caches keyed by a relative name must not serve another input
        sys.argv = ["kvnand", *(str(sandbox / a) if a in case["files"] else a for a in argv)]
        code: int | str = 0
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except _Timeout:
            code = "hang"
        except BaseException as exc:  # noqa: BLE001 -- this is what we are looking for
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "kvnand" in f.filename),
                         "?")
            code = "traceback"
            res["problems"].append(("traceback", f"{type(exc).__name__} at {where}: {str(exc)[:150]}"))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        res["codes"].append(code)
        stdout, stderr = out.getvalue(), err.getvalue()
        res["stderr"] = stderr[-400:]
        if code == "hang":
            res["problems"].append(("hang", f"no answer after {timeout:g} s"))
            break
        if code == "traceback":
            break
        if code not in (0, 1, 2):
            res["problems"].append(("exit", f"exit code {code}"))
        if code == 2:
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            one_line = len(lines) == 1 and lines[0].startswith("kvnand: error: ")
            if not one_line and "Usage:" not in stderr:
                res["problems"].append(("message", f"not one error line: {stderr[:200]!r}"))
            left = sorted(str(p.relative_to(sandbox)) for p in set(sandbox.rglob("*")) - before)
            if left:
                res["problems"].append(("leftover", f"left behind after exit 2: {left[:5]}"))
            break
        res["problems"] += [("nonfinite", m) for m in _check_output(argv, stdout, sandbox)]
    return res


def _check_output(argv: list[str], stdout: str, sandbox: Path) -> list[str]:
    found = []
    if "--format" in argv and argv[argv.index("--format") + 1] == "json" and stdout.strip():
        try:
            doc = _strict_json(stdout)
            found += _bad_numbers(doc)
            if argv[0] == "report":  # null would be a non-finite number the JSON writer hid
                found += [f"result {j} fits but {k} = {r.get(k)!r}" for j, r in enumerate(doc["results"])
                          for k in ("tokens_per_s", "latency_s", "energy_j_per_token", "ttft_s")
                          if not r["oom"] and not (isinstance(r.get(k), (int, float)) and (
                              r[k] > 0 or r[k] == 0 and k == "energy_j_per_token"))]  # every energy may be 0
        except ValueError as exc:
            found.append(f"stdout is not standard JSON: {str(exc)[:120]}")
    elif argv[0] not in ("dse", "show-config") and (m := _TEXT_BAD.search(stdout)):  # these echo user strings
        found.append(f"non-finite number in the output: ...{stdout[max(0, m.start() - 60):][:120]!r}")
    for f in sandbox.rglob("*.json"):
        if f.name == "m.json" or not f.is_file() or f.stat().st_size > 50_000_000:
            continue
        try:
            found += [f"{f.name}: {m}" for m in _bad_numbers(_strict_json(f.read_text()))]
        except (ValueError, UnicodeDecodeError) as exc:
            found.append(f"{f.name} is not standard JSON: {str(exc)[:120]}")
    return found[:3]


# ------------------------------------------------------------------------------------------- workers
def _worker(conn, root: str, timeout: float) -> None:
    def alarm(*_):
        raise _Timeout()

    signal.signal(signal.SIGALRM, alarm)
    os.environ["KVNAND_CACHE_DIR"] = str(Path(root) / "cache")
    import warnings

    warnings.simplefilter("ignore")
    while True:
        case = conn.recv()
        if case is None:
            return
        sandbox = Path(root) / f"case-{case['index']}"
        try:
            res = run_case(case, sandbox, timeout)
        finally:
            os.chdir(root)
            shutil.rmtree(sandbox, ignore_errors=True)
        conn.send(res)


def run_all(cases: list[Case], workers: int = 2, timeout: float = 60.0, log=print) -> list[dict]:
    """Every case through a pool of worker processes; a worker that dies or stops answering is replaced."""
    mp = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp(prefix="kvnand-fuzz-")
    todo = [asdict(c) for c in reversed(cases)]
    results: list[dict] = []
    slots: dict = {}  # connection -> (process, case, started)

    def start():
        parent, child = mp.Pipe()
        p = mp.Process(target=_worker, args=(child, root, timeout), daemon=True)
        p.start()
        return parent, p

    idle = [start() for _ in range(max(1, min(workers, len(cases))))]
    t0, last = time.monotonic(), time.monotonic()
    try:
        while todo or slots:
            while idle and todo:
                conn, p = idle.pop()
                case = todo.pop()
                conn.send(case)
                slots[conn] = (p, case, time.monotonic())
            for conn in wait(list(slots), timeout=1.0):
                p, case, _ = slots.pop(conn)
                try:
                    results.append(conn.recv())
                    idle.append((conn, p))
                except (EOFError, OSError):  # the worker died: a crash (segfault, out of memory)
                    p.join(1)
                    results.append({"index": case["index"], "codes": ["crash"], "stderr": "",
                                    "problems": [("crash", f"worker died (exit code {p.exitcode})")]})
                    idle.append(start())
            for conn, (p, case, started) in list(slots.items()):
                if time.monotonic() - started > 1.5 * timeout + 30:  # stuck where the alarm cannot reach
                    p.kill()
                    p.join(5)
                    slots.pop(conn)
                    results.append({"index": case["index"], "codes": ["hang"], "stderr": "",
                                    "problems": [("hang", f"killed after {1.5 * timeout + 30:g} s")]})
                    idle.append(start())
            if log and time.monotonic() - last > 30:
                last = time.monotonic()
                log(f"  {len(results)}/{len(cases)} inputs, {time.monotonic() - t0:.0f} s")
    finally:
        for conn, p in idle + [(c, v[0]) for c, v in slots.items()]:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(None)
            p.join(5)
            if p.is_alive():
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
    return sorted(results, key=lambda r: r["index"])


PROBLEMS = ("traceback", "nonfinite", "hang", "crash", "leftover", "message", "exit", "refused", "accepted")
FAILURES = PROBLEMS[:-1]  # "accepted" is a heuristic: reported, not a failure


def summarize(cases: list[Case], results: list[dict]) -> dict:
    """Counts per problem kind, plus examples (one per distinct signature)."""
    by_index = {c.index: c for c in cases}
    counts = dict.fromkeys(PROBLEMS, 0)
    examples: dict[str, list] = {k: [] for k in PROBLEMS}
    seen = set()
    for r in results:
        case = by_index[r["index"]]
        problems = list(r["problems"])
        if case.must_fail and r["codes"] and r["codes"][0] == 0 and not problems:
            problems.append(("accepted", f"exit 0 with {case.must_fail}"))
        if case.must_pass and r["codes"] and r["codes"][0] not in (0, 1) and not problems:
            problems.append(("refused", f"a shipped input, unchanged, was refused: {r['stderr'][-200:]}"))
        for kind in {k for k, _ in problems}:
            counts[kind] += 1
        for kind, msg in problems:
            sig = (kind, re.sub(r"\d+", "N", msg)[:80])
            if sig not in seen:
                seen.add(sig)
                examples[kind].append({"input": case.index, "kind": case.kind, "what": case.note[:200],
                                       "argv": case.steps, "problem": msg, "stderr": r["stderr"][-200:]})
    exits = {}
    for r in results:
        for c in r["codes"][:1]:
            exits[str(c)] = exits.get(str(c), 0) + 1
    return {"inputs": len(results), "by_kind": {k: sum(c.kind == k for c in cases) for k in KINDS},
            "first_exit_codes": exits, "problems": counts, "examples": examples}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="generated inputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per command before it counts as a hang")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    ap.add_argument("--show", type=int, default=3, help="examples to print per problem kind")
    ap.add_argument("--json", help="also write the full summary (with every example) to this file")
    ap.add_argument("--dump", type=int, metavar="INPUT", help="write that input's files into the current "
                    "directory and print its command lines, to reproduce it by hand")
    a = ap.parse_args(argv)
    kinds = [k for k in a.kinds.split(",") if k]
    cases = generate(a.n, a.seed, kinds)
    if a.dump is not None:
        case = cases[a.dump]
        for name, content in case.files.items():
            (Path(name).write_bytes if isinstance(content, bytes) else Path(name).write_text)(content)
        print(f"# {case.kind}: {case.note}" + (f" (never valid: {case.must_fail})" if case.must_fail else ""))
        for step in case.steps:
            print("kvnand " + " ".join(map(repr, step)))
        return 0
    t0 = time.monotonic()
    results = run_all(cases, a.workers, a.timeout)
    s = summarize(cases, results)
    print(f"{s['inputs']} inputs ({', '.join(f'{k} {v}' for k, v in s['by_kind'].items() if v)}) in "
          f"{time.monotonic() - t0:.0f} s; first exit codes {s['first_exit_codes']}")
    print("problems: " + ", ".join(f"{k} {v}" for k, v in s["problems"].items()))
    for kind, ex in s["examples"].items():
        for e in ex[: a.show]:
            print(f"  [{kind}] input {e['input']} ({e['kind']}: {e['what']}): {e['problem']}\n      "
                  f"kvnand {' '.join(e['argv'][0])[:200]}")
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=2, default=str))
    return 1 if any(s["problems"][k] for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
