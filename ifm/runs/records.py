"""The run records: one JSON file per run, written atomically (no reader ever sees half a file),
keyed by a hash of everything that decides its result (`run_key`: the full TrainConfig, the
data's identity and the training version), and the store that reads and writes them
(`RunCache`): a matching record is reused, a missing one trained, so an interrupted sweep
resumes. FM runs (and any run asked to) keep their weights beside the record (`.pt`).

The results directory is ``results_dir=`` if given, else ``$IFM_RESULTS_DIR``, else
``<repository>/results``; a profile's records sit in ``<results>/<profile>/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ifm.models import MODELS
from ifm.training.recipes import LEGACY_FILL
from ifm.training.loop import TRAINING_VERSION, TrainConfig
from ifm.runs.locks import live_holder, exclusive
from ifm.runs.verify import not_object, record_problem

REPO_ROOT = Path(__file__).resolve().parents[2]
# Bump when the cache key's layout changes (not when training changes: that is TRAINING_VERSION).
CACHE_FORMAT = 1
# The records made before the recipes (results/paper/ until the book is re-made) read as recipe legacy.
LEGACY_TRAINING_VERSION = 2


def clean_json(value):
    """JSON has no NaN or infinity: write them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; a record gets what open() would give it
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float = 600) -> list[Path]:
    """Delete the temporary files of `atomic_path` that a killed process left in `directory`
    (those untouched for `older_than` seconds: a live write finishes long before); returns them."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_results_dir(directory: str | os.PathLike, write: bool = True) -> Path:
    """`directory`, made if missing, after checking that it is a directory this process can write
    in (with `write` False: only that no part of it is a file); a ValueError naming it and the
    problem otherwise (before any run trains)."""
    path = Path(directory).expanduser()
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"results directory {path}: {part} is a file, not a directory")
        if part.exists():
            break
    if not write:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as err:
        raise ValueError(f"results directory {path}: cannot write in it ({err.strerror or err})") from None
    return path


_STATE_FIRST = {".pt": 0, ".json": 1}    # a record is written after the weights it names


class WriteError(RuntimeError):
    """The results directory refused a finished run's files (full disk, a path that is a directory...)."""


def write_run_files(directory: Path, files: dict) -> None:
    """Write a finished run's files (name: bytes) into the run cache atomically, weights before the
    record that names them; when one cannot be written, none of this run's new files stays."""
    made = []
    try:
        for name in sorted(files, key=lambda n: _STATE_FIRST.get(Path(n).suffix, 2)):
            path = directory / name
            existed = path.exists()
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(files[name])
            if not existed:
                made.append(path)
    except OSError as err:
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink()
        raise WriteError(f"cannot write {directory / name}: {err.strerror or err}") from None


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(clean_json(data), f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
    return Path(path)


def save_state_atomic(state: dict, path: str | os.PathLike) -> Path:
    """torch.save of a state_dict, atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def make_portable(directory: str | os.PathLike) -> dict:
    """Rewrite the JSON records under `directory` once so that none names a path of the machine
    that made it (`ifm.data.registry.portable_provenance` on each dataset's provenance; a pre-training
    file by its name), changing nothing else: the cache key and what it hashes are checked to be
    the same before each record is written back (atomically, in the same format). Returns counts."""
    from ifm.data.registry import portable_provenance

    counts = {"read": 0, "rewritten": 0}
    for path in sorted(Path(directory).rglob("*.json")):
        record = read_json(path)
        counts["read"] += 1
        before = json.dumps(record, sort_keys=True)
        cache = json.dumps(record.get("cache", {}).get("material"), sort_keys=True), record.get("cache", {}).get("key")
        if isinstance(record.get("dataset"), dict) and isinstance(record["dataset"].get("provenance"), dict):
            record["dataset"]["provenance"] = portable_provenance(record["dataset"]["provenance"])
        pretrain = record.get("pretrain")
        if isinstance(pretrain, dict) and str(pretrain.get("from_file", "")).startswith("/"):
            pretrain["from_file"] = os.path.basename(pretrain["from_file"])
        if json.dumps(record, sort_keys=True) == before:
            continue
        after = json.dumps(record.get("cache", {}).get("material"), sort_keys=True), record.get("cache", {}).get("key")
        if after != cache:
            raise AssertionError(f"{path}: making it portable would change its cache key")
        write_json_atomic(path, record)
        counts["rewritten"] += 1
    return counts


# --------------------------------------------------------------------------- where records live
def results_root(results_dir: str | os.PathLike | None = None) -> Path:
    return Path(results_dir or os.environ.get("IFM_RESULTS_DIR") or REPO_ROOT / "results").expanduser()


# --------------------------------------------------------------------------- cache keys
def canonical(value):
    """JSON-ready value with one spelling per meaning: tuples are lists, 0.0 is 0, keys sorted later."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into a cache key")


# Provenance entries that say where the bytes were read from, not what they are.
_VOLATILE_PROVENANCE = ("source", "built_from_cache")


def data_identity(dataset, options: dict | None = None) -> dict:
    """What identifies a dataset's content: name, options, split seed and its provenance
    (file hashes, split rule, sizes, generator...) minus paths and cache flags."""
    prov = {k: v for k, v in dataset.provenance.items() if k not in _VOLATILE_PROVENANCE}
    prov["files"] = [{k: v for k, v in f.items() if k != "path"} for f in prov.get("files", [])]
    return canonical({"name": dataset.name, "options": options or {},
                      "split_seed": prov.get("split_seed"), "provenance": prov})


def config_identity(config: TrainConfig) -> dict:
    """The full TrainConfig, with `pretrain_fm` resolved (None means the paper's choice), so
    that an FM baseline and the FM pre-training of another model share one record."""
    d = config.to_dict()
    d["pretrain_fm"] = config.uses_pretraining()
    return canonical(d)


def run_key(config: TrainConfig, dataset, options: dict | None = None, extra: dict | None = None) -> tuple[str, dict]:
    """(key, material): a 20-hex-digit SHA-256 of everything that determines a run's result
    (``extra``: anything else that does, e.g. the FM state a run started from)."""
    material = {"cache_format": CACHE_FORMAT, "training_version": TRAINING_VERSION,
                "config": config_identity(config), "data": data_identity(dataset, options), **(extra or {})}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20], material


# --------------------------------------------------------------------------- the cache
def stamp(record: dict, key: str, material: dict, profile: str, stem: str, state_file: str | None = None) -> dict:
    """Give a run record its place in the store: key, what the key hashes, the profile (or "cli")
    and when it was written. Every record has this shape, the book's and `train --out`'s alike."""
    record["cache"] = {"key": key, "stem": stem, "material": material, "profile": profile,
                       "written_at": time.time(),
                       "written_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "state_file": state_file}
    return record


class RunCache:
    """Run records in one directory. ``force``: False; True (retrain anything written before
    this cache object was made, so each run is retrained once and then shared); or a Unix time
    (retrain anything written before it: `reproduce --force` shares one across notebooks)."""

    lock_poll = 1.0   # seconds between looks at a lock another process holds

    def __init__(self, directory: str | os.PathLike, force: bool | float = False):
        self.directory = Path(directory).expanduser()
        self.force_since = time.time() if force is True else (force or None)
        self._index = None
        self._checked_state = None      # (stem, state) read by the last state check
        self.ignored: dict = {}         # (dataset, data identity, config without device): why its record was ignored
        if self.directory.is_dir():
            removed = remove_stale_temporaries(self.directory)
            if removed:
                warnings.warn(f"removed {len(removed)} temporary file(s) that an interrupted write left in "
                              f"{self.directory}: {', '.join(p.name for p in removed)}")

    def read(self, path: Path, run_record: bool = True) -> dict | None:
        """The JSON object at `path` (with `run_record`: of a run record's shape), else None with a warning."""
        what = "run record" if run_record else "record"
        try:
            record = read_json(path)
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable {what} {path}: {err}")
            return None
        if run_record:
            problem = record_problem(record, path)
        else:
            problem = None if isinstance(record, dict) else not_object(record)
        if problem:
            warnings.warn(f"ignoring {what} {path}: {problem}")
            with contextlib.suppress(AttributeError, KeyError, TypeError):    # where the run it claims to be goes
                material = record["cache"]["material"]
                self.ignored[material["data"]["name"], _identity_text(material["data"]),
                             _identity_text(_without_device(material["config"]))] = \
                    f"its record {path.name} was ignored: {problem}"
            return None
        return record

    def index(self) -> dict:
        """{dataset name: {data identity: {configuration without device: newest record}}} of the
        current training version's records in the directory, read and keyed once."""
        if self._index is None:
            self._index = {}
            for path in sorted(self.directory.glob("*.json")):
                if path.name.split("-")[0] not in MODELS:    # a derived record (factors-...), not a run
                    continue
                record = self.read(path)
                if record is None:
                    continue
                material = record["cache"]["material"]
                config = material["config"]
                if record.get("training_version") == LEGACY_TRAINING_VERSION:
                    # made before the recipes: its settings are the legacy recipe's
                    config = canonical({**LEGACY_FILL, **config})
                elif record.get("training_version") != TRAINING_VERSION:
                    continue
                configs = self._index.setdefault(material["data"]["name"], {}).setdefault(
                    _identity_text(material["data"]), {})
                key = _identity_text(_without_device(config))
                if record["cache"].get("written_at", 0) >= configs.get(key, {}).get("cache", {}).get("written_at", 0):
                    configs[key] = record
        return self._index

    def refresh(self) -> None:
        """Read the directory again at the next look (another process may have written records)."""
        self._index = None

    def stem(self, key: str, config: TrainConfig, dataset_name: str) -> str:
        return f"{config.model}-{dataset_name}-{key}"

    def paths(self, stem: str) -> tuple[Path, Path]:
        return self.directory / f"{stem}.json", self.directory / f"{stem}.pt"

    def lookup(self, stem: str, key: str, need_state: bool = False) -> dict | None:
        record_path, state_path = self.paths(stem)
        record = self.read(record_path) if record_path.is_file() else None
        if record is None:
            return None
        meta = record["cache"]
        if meta["key"] != key or record.get("training_version") != TRAINING_VERSION:
            return None
        if self.force_since is not None and meta.get("written_at", 0) < self.force_since:
            return None
        if need_state and not self._state_readable(stem):
            return None
        return record

    def _state_readable(self, stem: str) -> bool:
        """Whether the model state of `stem` loads; a damaged one is reported and will be retrained."""
        path = self.paths(stem)[1]
        if not path.is_file():
            return False
        try:
            state = self.load_state(stem)
        except Exception as err:    # torch raises many kinds (zip, pickle, EOF...) for a damaged file
            state = err
        if not isinstance(state, dict):
            warnings.warn(f"ignoring unreadable model state {path} ({type(state).__name__}); retraining its run")
            return False
        self._checked_state = (stem, state)     # the caller loads it next: hand this one over
        return True

    def holder(self, stem: str) -> str | None:
        """'pid N on HOST' of the live process training `stem` (holding its lock), else None."""
        return live_holder(self.directory / f"{stem}.lock")

    def lock(self, stem: str, on_wait=None):
        """Hold `<stem>.lock` while training a run, so that a second sweep on this directory waits
        for the record instead of training the same run again."""
        return exclusive(self.directory / f"{stem}.lock", on_wait=on_wait, poll=self.lock_poll)

    def store(self, stem: str, record: dict, state: dict | None = None) -> Path:
        record_path, state_path = self.paths(stem)
        if state is not None:
            save_state_atomic({k: v.detach().cpu() for k, v in state.items()}, state_path)
        return write_json_atomic(record_path, record)

    def load_state(self, stem: str) -> dict:
        checked, self._checked_state = self._checked_state, None
        if checked is not None and checked[0] == stem:
            return checked[1]
        return torch.load(self.paths(stem)[1], map_location="cpu", weights_only=True)

    def derived_path(self, kind: str, dataset_name: str, key: str) -> Path:
        """Where a result computed from trained models (not a training run) is kept, e.g. Table 1's."""
        return self.directory / f"{kind}-{dataset_name}-{key}.json"


def _without_device(config_id: dict) -> dict:
    return {k: v for k, v in config_id.items() if k != "device"}


def _identity_text(identity: dict) -> str:
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))
