"""The optuna study: storage, sampler, workers, the global trial budget, published designs, crash recovery.

Storage: by default optuna's journal file (`study.journal` in the run folder, JournalStorage with
JournalFileBackend: an append-only log under a file lock, no server; `--workers N` processes on one machine
share it). `--storage` also takes another journal file path, or any SQLAlchemy URL (RDB storage):
`postgresql://...` lets workers on many machines share one study, `sqlite:///PATH.db` reads a grid's or an
older run's study. Every `kvnand dse run` against the same storage and study name joins the same study; the
first one creates it, stores the space in the study's user attributes, and enqueues the published designs
so they are the first trials.

Sampler: the space's (TPE, NSGA-II or random), except that a discrete space with no more designs than the
budget (and at most MAX_ENUMERATED) is enumerated by optuna's BruteForceSampler (each design once; the study
stops when all are done).

No design is evaluated twice: a trial whose parameters equal those of a completed trial of the study is told
that trial's objective values and constraints (user attribute `duplicate_of`) without evaluating or storing
its record again. Each trial keeps a compact record (metrics, violated constraints, which workload points ran
out of memory); `kvnand dse show` re-evaluates a trial's design for the full per-point report.

Budget: `--trials N` is the study's total, shared by all workers. A trial is "taken" once it runs,
whatever its end (complete, duplicate, failed, crashed). Trials are numbered in creation order, so a trial
numbered below N - 1 cannot be the N-th taken one; only from there on does a worker count the taken trials
numbered up to its own, and if that exceeds N (another worker took the last slot at the same moment) it
closes its trial unevaluated as PRUNED with user attribute `surplus` and stops. So exactly N trials are
taken, however many workers race, without a scan of the study per trial.

Crashes: on RDB storage workers send heartbeats; a trial whose worker fell silent for 2 x `heartbeat_s` is
marked FAIL by any live worker, or by a later run. A journal file serves one machine, where a trial's
worker (host:pid) is checked directly: a trial of a process that no longer exists is marked FAIL.
`kvnand dse run` waits for running trials to finish or fail before it exports; a trial whose worker died
before naming itself is failed 3 x `heartbeat_s` after it started. A failed trial counts against the budget
and is never re-evaluated silently.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from kvnand.errors import InputError
from kvnand.study.dse.objectives import (
    MAXIMIZE,
    MINIMIZE,
    compact_report,
    constraint_names,
    evaluate_design,
    metric,
    stored_constraints,
    worst,
)
from kvnand.study.dse.space import SEED_RANGE, Space, load_space

META_KEY = "kvnand"           # study user attribute holding the space and its digest
# trial system attribute of the constraint values, a list: optuna's own key (its samplers write it there, and
# optuna-dashboard reads only that); tests check it equals optuna.samplers._base._CONSTRAINTS_KEY
CONSTRAINTS_KEY = "constraints"
PROGRESS_EVERY_S = 5.0
MAX_TRIALS = 10**7
MAX_WORKERS = 1024
JOURNAL = "study.journal"      # the run folder's study: optuna's journal file
# BruteForceSampler rebuilds its tree from every trial per sample: measured 150 trials/s over the first 500
# trials, 30/s by 1500 (no evaluation). Larger spaces are sampled (repeats are looked up, not evaluated) or
# listed by `kvnand dse grid`.
MAX_ENUMERATED = 1000


# ---------------------------------------------------------------------- storage and study
def default_storage(out: Path) -> str:
    """The study storage of a run or grid folder: optuna's journal file there."""
    return str((Path(out) / JOURNAL).resolve())


def is_url(storage: str) -> bool:
    """An RDB URL (sqlite:///..., postgresql://...); anything else names a journal file."""
    return "://" in storage


def public_url(url: str) -> str:
    """The storage URL with any password hidden (for printing)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: it is reported as a bad --storage elsewhere
        return url


def open_storage(url: str, heartbeat_s: int | None = None):
    """A journal file's storage, or optuna RDB storage with heartbeats (stale trials are failed after
    2 x heartbeat_s) for a URL."""
    import optuna

    if not is_url(url):
        if _is_sqlite(url):  # a path to an SQLite study (an older grid's study.db), as optuna-dashboard takes it
            url = f"sqlite:///{Path(url).resolve()}"
        else:
            return _journal(url)
    url = _with_driver(url)
    _check_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        kwargs["engine_kwargs"] = {"creator": functools.partial(_sqlite_connect, url.removeprefix("sqlite:///"))}
    if heartbeat_s:
        kwargs.update(heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat options are "experimental" in optuna
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # sqlalchemy raises many types: bad URL, no driver, server unreachable
            failure = exc
            # another process is creating optuna's tables in the same empty database right now: retry
            if not (isinstance(exc, (IntegrityError, ProgrammingError)) or "already exists" in str(exc)):
                break
            time.sleep(0.5 * (attempt + 1))
    raise InputError(f"cannot open the study storage: {type(failure).__name__}: {str(failure).splitlines()[0]}",
                     key="--storage", value=public_url(url),
                     allowed="sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB") from None


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _journal(path: str):
    """optuna's JournalStorage on a file (created if absent), with a clear error for a file that is not one."""
    from optuna.storages import JournalStorage

    allowed = "a journal file (e.g. out/dse/NAME/study.journal), sqlite:///PATH.db or postgresql://USER@HOST/DB"
    p = Path(path)
    if p.is_dir() or not p.parent.is_dir():
        raise InputError("not a journal file in an existing folder", key="--storage", value=path, allowed=allowed)
    if not _journal_or_new(p):  # appending records to someone's file would damage it
        raise InputError("the file exists and is not an optuna journal", key="--storage", value=path,
                         allowed=allowed)
    try:
        return JournalStorage(_journal_backend(str(p)))
    except Exception as exc:  # unreadable, or lines that are not optuna's journal
        raise InputError(f"cannot read the study journal: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                         key="--storage", value=path, allowed=allowed) from None


def _journal_or_new(p: Path) -> bool:
    """An absent or empty file, or one whose first line is an optuna journal record."""
    try:
        with open(p, "rb") as f:
            first = f.readline(1 << 16)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not first:
        return True
    try:
        return "op_code" in json.loads(first)
    except (ValueError, TypeError):
        return False


def _journal_backend(path: str):
    """optuna's JournalFileBackend without an fsync per record: each append is written and flushed under the
    file lock (other processes read it at once, and it survives a killed process); only a power loss may drop
    the last records. optuna syncs every record (about 16 a trial, ~1.7 ms each here), which would cost more
    than evaluating a design. The same trade as SQLite's synchronous=NORMAL."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    class FlushedJournal(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with get_lock_file(self._lock), open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()

    return FlushedJournal(path)


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 (our `postgres` extra) when only it is there."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _check_driver(url: str) -> None:
    """A PostgreSQL URL needs a driver, which only the `postgres` extra installs: say so, not SQLAlchemy's
    module error."""
    import importlib.util

    scheme = url.partition("://")[0]
    module = {"postgresql": "psycopg", "postgresql+psycopg": "psycopg", "postgresql+psycopg2": "psycopg2"}.get(scheme)
    if module is not None and importlib.util.find_spec(module) is None:
        raise InputError("no PostgreSQL driver is installed: pip install 'kvnand[postgres]'", key="--storage",
                         value=public_url(url))


def _sqlite_connect(path: str):
    """An SQLite connection for a study file shared by processes on one machine: write-ahead log with
    synchronous=NORMAL (commits survive a killed process, no fsync per commit; only power loss may drop the
    last trials), and a long lock wait instead of SQLite's 5 s default."""
    import sqlite3

    conn = sqlite3.connect(path, timeout=300, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _store_constraints(trial, values: list[float]) -> None:
    """Constraints as one list under optuna's own key, the format its samplers write and optuna-dashboard
    reads (`Trial.set_constraint` writes one key per constraint, which the dashboard ignores)."""
    trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, values)


def enumerable(space: Space, budget: int) -> int | None:
    """How many designs a discrete space has, when it has no more than `budget` (and MAX_ENUMERATED; else
    None: sample it)."""
    if any(p.float is not None and p.step is None for p in space.varying.values()):
        return None
    try:
        n = len(space.grid())
    except InputError:  # a range without a step, or more designs than a grid may list
        return None
    return n if n <= min(budget, MAX_ENUMERATED) else None


def make_sampler(space: Space, seed: int, budget: int):
    import optuna

    kind = space.spec.study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BruteForceSampler and multivariate/group TPE are "experimental"
        if enumerable(space, budget) is not None:  # every design once; the study stops when all are done
            return optuna.samplers.BruteForceSampler(seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=stored_constraints)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # group=True: conditional parameters (e.g. G2 only for KVNAND-D) are modelled jointly
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=max(10, len(space.known_designs())),
                                          constraints_func=stored_constraints)


def directions(space: Space) -> list[str]:
    return [metric(k).direction for k in space.spec.objectives]


def _describe(study, space: Space) -> None:
    """Objective names and the space itself, on a study just created."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since optuna 3.2
        study.set_metric_names(list(space.spec.objectives))
    study.set_user_attr(META_KEY, {"space": space.raw, "space_file": space.file, "digest": space.digest,
                                   "objectives": list(space.spec.objectives),
                                   "constraints": constraint_names(space)})


def optuna_values(space: Space, values: list[float], feasible: bool) -> list[float]:
    """What optuna is told: an infeasible design's objectives are undefined (the worst value), so no optuna
    tool puts it on a front; what it measured stays in its report (and in trials.csv)."""
    return values if feasible else [worst(k) for k in space.spec.objectives]


def open_study(space: Space, storage, name: str, seed: int, budget: int):
    """Create the study (storing the space, enqueueing the published designs) or join an existing one."""
    import optuna

    sampler = make_sampler(space, seed, budget)
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=directions(space))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        _check_same_space(study, space, name)
        return study
    _describe(study, space)
    for label, params in space.known_designs():
        study.enqueue_trial(params, user_attrs={"known_design": label}, skip_if_exists=True)
    return study


def _check_same_space(study, space: Space, name: str, wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while (meta := study.user_attrs.get(META_KEY)) is None:
        if time.monotonic() > deadline:  # the creator stores it right after creating the study
            raise InputError("the study exists but was not created by `kvnand dse run`", key="--study", value=name)
        time.sleep(0.2)
    if meta["digest"] != space.digest:
        raise InputError(f"study '{name}' was created from a different space ({meta['space_file']}); "
                         "use the same space file or another --study name", key="--study", value=name)


def taken(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state != TrialState.WAITING and not trial.user_attrs.get("surplus")


def n_taken(study) -> int:
    return sum(taken(t) for t in study.get_trials(deepcopy=False))


def design_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


class Evaluated:
    """The completed, evaluated trials of a study by design: a worker looks a design up here before
    evaluating it (its own trials are added as they finish; the study's are read again on a miss, at most
    once per REREAD_S on a server database, where reading every trial is a query)."""

    REREAD_S = 1.0

    def __init__(self, study):
        self.study, self.by_design, self.read = study, {}, set()
        self.local = not hasattr(study._storage, "record_heartbeat")  # a journal: trials are in memory
        self.last_read = -math.inf

    def refresh(self) -> None:
        from optuna.trial import TrialState

        self.last_read = time.monotonic()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number not in self.read:
                self.read.add(t.number)
                self.add(t.number, t.params, t.values, stored_constraints(t), t.user_attrs)

    def add(self, number: int, params: dict, values, constraints: list[float], attrs: dict) -> None:
        key = design_key(params)
        if "duplicate_of" not in attrs and (key not in self.by_design or number < self.by_design[key][0]):
            self.by_design[key] = (number, list(values), list(constraints))

    def find(self, params: dict):
        """(number, values told to optuna, constraints) of the trial that evaluated this design, or None."""
        key = design_key(params)
        if key not in self.by_design and (self.local or time.monotonic() - self.last_read > self.REREAD_S):
            self.refresh()
        return self.by_design.get(key)


# ---------------------------------------------------------------------- a worker
class Objective:
    """optuna objective of one worker: budget ticket (stops the worker at the budget), look-up of designs
    already evaluated, evaluation, user attributes, constraints."""

    def __init__(self, space: Space, study, budget: int, log=None, progress=None):
        self.space, self.study, self.budget, self.log, self.progress = space, study, budget, log, progress
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.last_print = time.monotonic()
        self.evaluated = Evaluated(study)

    def __call__(self, trial):
        import optuna

        if hasattr(trial.storage, "record_heartbeat"):
            # optuna's heartbeat thread may not have written yet: write one now, so a trial that names its
            # worker always has a heartbeat and goes stale if the worker dies (unnamed ones are failed by settle)
            trial.storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("worker", self.worker)
        ahead = trial.number + 1  # an upper bound of the taken trials numbered up to this one
        if ahead >= self.budget:  # near the end of the budget: count exactly
            ahead = sum(taken(t) for t in self.study.get_trials(deepcopy=False) if t.number <= trial.number)
        if ahead >= self.budget:  # this is the last trial of the budget, or one too many
            self.study.stop()
            if ahead > self.budget:
                trial.set_user_attr("surplus", True)
                raise optuna.TrialPruned("the global trial budget was reached by other workers")
        if self.log and not self.progress and time.monotonic() - self.last_print > PROGRESS_EVERY_S:
            self.last_print = time.monotonic()
            self.log(f"  {ahead}/{self.budget} trials")
        params = self.space.suggest(trial)
        if (done := self.evaluated.find(params)) is not None:  # the same design again: its stored values
            number, values, constraints = done
            trial.set_user_attr("duplicate_of", number)
            _store_constraints(trial, constraints)
        else:
            try:
                ev = evaluate_design(self.space, params)
            except Exception as exc:  # recorded on the trial (FAIL), the worker goes on
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
                raise
            values = optuna_values(self.space, ev.values, ev.feasible)
            constraints = [ev.constraints[k] for k in constraint_names(self.space)]
            trial.set_user_attr("violated", ev.violated)
            trial.set_user_attr("report", compact_report(ev.report))
            _store_constraints(trial, constraints)
            self.evaluated.add(trial.number, params, values, constraints, {})
        if self.progress:
            self.progress(min(ahead, self.budget))
        return values


def work(space_file: str, url: str, name: str, budget: int, seed: int, log=None, progress=None) -> None:
    """One worker: run trials of the study until the global budget is taken (progress lines to `log`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_file)
    storage = open_storage(url, space.spec.study.heartbeat_s)
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(space, seed, budget))
    if n_taken(study) >= budget or _all_evaluated(space, study, budget):
        return
    obj = Objective(space, study, budget, log, progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's experimental-feature warnings (heartbeat)
        study.optimize(obj, catch=(Exception,))


def _all_evaluated(space: Space, study, budget: int) -> bool:
    """An enumerated space whose every design the study has evaluated (its sampler would only repeat one)."""
    if enumerable(space, budget) is None:
        return False
    done = Evaluated(study)
    done.refresh()
    return all(design_key(p) in done.by_design for p in space.grid())


def settle(study, heartbeat_s: int) -> list:
    """Wait until no trial is RUNNING: live workers finish theirs, dead workers' trials go stale and are
    failed. Returns the trials still running at the deadline (none unless a worker hangs)."""
    import datetime

    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    deadline = time.monotonic() + 3 * heartbeat_s + 30
    while True:
        if hasattr(study._storage, "record_heartbeat"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fail_stale_trials(study)
        else:
            fail_dead_workers(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        # a worker killed between creating its trial and the first heartbeat leaves a trial that never goes
        # stale; a live worker names itself on its trial within milliseconds of sampling it
        old = datetime.datetime.now() - datetime.timedelta(seconds=3 * heartbeat_s)
        for t in running:
            if "worker" not in t.user_attrs and t.datetime_start is not None and t.datetime_start < old:
                study.tell(t.number, state=TrialState.FAIL)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(min(1.0, heartbeat_s / 2))


def fail_dead_workers(study) -> list[int]:
    """Mark FAIL the running trials of this machine whose worker process no longer exists (storage without
    heartbeats: a journal file, which serves one machine). Returns their numbers."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who, _, pid = t.user_attrs.get("worker", "").rpartition(":")
        if who == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


# ---------------------------------------------------------------------- a run
def run(space: Space, out: Path, *, trials: int | None = None, workers: int = 1, storage: str | None = None,
        study_name: str | None = None, seed: int | None = None, log=print, progress=None) -> dict:
    """`kvnand dse run`: join or create the study, run `workers` processes to the budget, export.
    `progress(taken, budget)` is called as trials are taken (else progress lines go to `log`)."""
    import multiprocessing

    import optuna

    from kvnand.io import check_output
    from kvnand.study.dse import export

    check_workers(workers)
    budget = trials if trials is not None else space.spec.study.trials
    if not 1 <= budget <= MAX_TRIALS:
        raise InputError("trial budget out of range", key="--trials", value=budget, allowed=f"1 to {MAX_TRIALS}")
    seed = space.spec.study.seed if seed is None else seed
    if not 0 <= seed <= SEED_RANGE - workers:  # worker i uses seed + i
        raise InputError("sampler seed out of range", key="--seed", value=seed,
                         allowed=f"0 to {SEED_RANGE - workers} (worker i uses seed + i < 2^32)")
    if storage is not None and _in_memory(storage):
        raise InputError("an in-memory database is private to one process and lost at exit; workers could not "
                         "share it and nothing would remain to export", key="--storage", value=storage,
                         allowed="sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB")
    if storage is not None:
        check_sqlite_file(storage, must_exist=False)
    name = study_name or space.name
    out = Path(out)
    check_output(out, "--out", directory=True)
    made = [d for d in (out, *out.parents) if not os.path.exists(d)]
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hb = space.spec.study.heartbeat_s
    try:
        study = open_study(space, open_storage(url, hb), name, seed, budget)
    except InputError:  # e.g. an unreachable --storage: leave nothing behind
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        raise
    n_known = len(space.known_designs())
    if budget < n_known:
        log(f"note: --trials {budget} is less than the {n_known} published designs; only the first {budget} run")
    log(f"study '{name}' in {public_url(url)}: budget {budget} trials, {workers} worker(s)")
    if (size := enumerable(space, budget)) is not None:
        log(f"the space has {size} designs, no more than the budget: each is evaluated once (optuna "
            "BruteForceSampler), then the study stops")
    done_before, t0 = _finished(study), time.monotonic()
    exit_codes: list[int] = []
    if workers == 1:
        work(space.file, url, name, budget, seed, log, progress and (lambda n: progress(n, budget)))
    else:
        ctx = multiprocessing.get_context("spawn")  # no forked SQLAlchemy connections
        procs = [ctx.Process(target=work, args=(space.file, url, name, budget, seed + i), daemon=False)
                 for i in range(workers)]
        for p in procs:
            p.start()
        _wait(procs, study, budget, log, progress)
        exit_codes = [p.exitcode for p in procs]
    still_running = settle(study, hb)
    elapsed = time.monotonic() - t0
    new = _finished(study) - done_before
    rows = export.rows_from_study(study, list(space.spec.objectives))
    summary = export.write_outputs(out, rows, list(space.spec.objectives), directions(space))
    summary.update({
        "study": name, "storage": public_url(url), "budget": budget, "workers": workers,
        "trials_taken": n_taken(study), "duplicates": _duplicates(study), "trials_this_run": new,
        "elapsed_s": elapsed,
        "trials_per_s": new / elapsed if elapsed > 0 else None,
        "worker_exit_codes": exit_codes, "still_running": [t.number for t in still_running],
        "dashboard": f"optuna-dashboard {public_url(url)}",
    })
    export.write_json(out / "summary.json", summary)
    return summary


def check_workers(workers: int) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise InputError("number of worker processes out of range", key="--workers", value=workers,
                         allowed=f"1 to {MAX_WORKERS}")


def check_sqlite_file(url: str, *, must_exist: bool) -> None:
    """A `sqlite:///PATH` must name an SQLite database (or, unless `must_exist`, no file yet): opening anything
    else would create an empty database, or leave journal files beside a file that is not one."""
    if not url.startswith("sqlite:///") or _in_memory(url):
        return
    path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    allowed = "the sqlite:///PATH.db of an earlier `kvnand dse run`" if must_exist else \
        "sqlite:///PATH.db (a new file or an SQLite database), or a server URL"
    try:
        exists = path.exists()
        head = path.read_bytes()[:16] if exists else b""
    except OSError as exc:
        raise InputError(f"cannot read the study database ({exc.strerror or exc})", key="--storage", value=url,
                         allowed=allowed) from None
    if must_exist and not exists:
        raise InputError("no such study database", key="--storage", value=url, allowed=allowed)
    if exists and head and head != b"SQLite format 3\x00":
        raise InputError("not an SQLite database", key="--storage", value=url, allowed=allowed)


def _in_memory(url: str) -> bool:
    """sqlite:// (no path) and sqlite:///:memory: are SQLite databases that live in one process's memory."""
    rest = url.split("://", 1)[1] if url.startswith("sqlite") and "://" in url else None
    return rest is not None and rest.split("?", 1)[0] in ("", "/", "/:memory:")


def _duplicates(study) -> int:
    """Trials that were told a stored design's values instead of evaluating it again."""
    return sum("duplicate_of" in t.user_attrs for t in study.get_trials(deepcopy=False))


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def _wait(procs, study, budget: int, log, progress=None) -> None:
    last = time.monotonic()
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5)
        if time.monotonic() - last > (1.0 if progress else PROGRESS_EVERY_S):  # each count reads every trial
            last = time.monotonic()
            if progress:
                progress(n_taken(study), budget)
            else:
                log(f"  {n_taken(study)}/{budget} trials")
    for i, p in enumerate(procs):
        if p.exitcode:
            log(f"warning: worker {i} (pid {p.pid}) exited with code {p.exitcode}; its running trial is failed "
                "once its heartbeat goes stale")


def save_grid(space: Space, out: Path, designs: list[tuple[dict, list[float], bool, dict, dict, str | None]]) -> str:
    """A grid's designs as a finished optuna study named after the space, in the run folder's study.journal
    (replacing an older grid's), so `dse pareto` and optuna-dashboard open it like a search. `designs`:
    (params, values, feasible, constraints, user attributes, published label). Returns the storage URL."""
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = default_storage(out)
    storage = open_storage(url)
    try:
        optuna.delete_study(study_name=space.name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(storage=storage, study_name=space.name, directions=directions(space))
    _describe(study, space)
    names = constraint_names(space)
    study.add_trials([create_trial(
        params=params, distributions={k: space.distribution(k, params) for k in params},
        values=optuna_values(space, values, feasible),
        user_attrs={**attrs, **({"known_design": label} if label else {})},
        system_attrs={CONSTRAINTS_KEY: [cons.get(k, 0.0) for k in names]})
        for params, values, feasible, cons, attrs, label in designs])
    return url


def load_existing(url: str, name: str):
    """An existing study (for `kvnand dse pareto`), with a clear error naming the studies there are."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite") and _in_memory(url):
        raise InputError("an in-memory database holds no study", key="--storage", value=url,
                         allowed="the sqlite:///PATH.db of an earlier `kvnand dse run`, or a server URL")
    check_sqlite_file(url, must_exist=True)
    if not is_url(url) and not Path(url).is_file():
        raise InputError("no such study journal", key="--storage", value=url,
                         allowed="the study.journal of an earlier `kvnand dse run`, sqlite:///PATH.db or a server URL")
    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        raise InputError("no such study in the storage", key="--study", value=name,
                         allowed=", ".join(names) or "(the storage has no studies)")
    return optuna.load_study(study_name=name, storage=storage)


def trial_report(url: str, name: str, number: int) -> dict:
    """`kvnand dse show`: a trial of a stored study with the full report of its design, re-evaluated from its
    parameters with the space the study stored (a trial keeps only a compact record)."""
    from optuna.trial import TrialState

    from kvnand.study.dse.space import stored_space

    study = load_existing(url, name)
    meta = study.user_attrs.get(META_KEY)
    if meta is None:
        raise InputError("the study was not created by `kvnand dse run` (it stores no space)", key="--study",
                         value=name)
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise InputError("no such trial in the study", key="TRIAL", value=number,
                         allowed=f"0 to {len(trials) - 1}" if trials else "(the study has no trials)")
    t = trials[number]
    if t.state in (TrialState.WAITING, TrialState.RUNNING) or t.user_attrs.get("surplus") or not t.params:
        raise InputError(f"trial {number} evaluated no design ({t.state.name.lower()})", key="TRIAL", value=number)
    space = stored_space(meta["space"], f"{meta['space_file']} (as stored in study '{name}')")
    ev = evaluate_design(space, dict(t.params))
    return {"schema": "kvnand.dse.trial/1", "study": name, "number": number, "state": t.state.name,
            "label": t.user_attrs.get("known_design"), "duplicate_of": t.user_attrs.get("duplicate_of"),
            "values": dict(zip(meta["objectives"], t.values or [], strict=False)),
            "feasible": ev.feasible, **ev.report}


def objective_directions(study) -> tuple[list[str], list[str]]:
    """Objective names and directions of a study created by `kvnand dse run`."""
    meta = study.user_attrs.get(META_KEY) or {}
    names = meta.get("objectives") or study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    dirs = [MAXIMIZE if d.name == "MAXIMIZE" else MINIMIZE for d in study.directions]
    return list(names), dirs
