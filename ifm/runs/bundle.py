"""A trained model saved with all it needs to score new rows: a model bundle (a directory).

    DIR/manifest.json   {"ifm_bundle": FORMAT, package version, model, recipe, the TrainConfig,
                         task, label range, the fitted encoding (each field's vocabulary, numeric
                         bin edges, missing and rare ids, the target's mapping), the data it was
                         trained on (files and their sha256, split rule, sizes), its validation and
                         test metrics, and those of the FM it started from}
    DIR/weights.pt      torch.save of the model's state_dict: tensors only (loaded with
                        weights_only=True; no pickled code)

A bundle is written into a temporary sibling directory and renamed into place: never half-written.
`Bundle` scores raw rows (a DataFrame or a CSV/libfm path): predictions, IFM's input-aware factors
m_x,i, and each field's additive term in the prediction.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ifm._version import __version__
from ifm.data.encoding import Encoding, Encoded
from ifm.data.registry import portable_provenance
from ifm.models import DISPLAY_NAMES, INPUT_AWARE, build_model
from ifm.models.kernels import Dropout
from ifm.runs.records import clean_json
from ifm.training.loop import EVAL_BATCH, TrainConfig, predict
from ifm.training.metrics import evaluate

FORMAT = 1
MANIFEST, WEIGHTS = "manifest.json", "weights.pt"


class BundleError(ValueError):
    """A directory that is not a bundle this version reads; the message names it."""


# ---------------------------------------------------------------------------------------- saving
def check_target(directory) -> Path:
    """Where a bundle can be saved, checked before training: a new path, or an existing bundle
    (replaced); never a file or a directory that holds something else."""
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--save {path}: is a file; give a directory for the model bundle")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise ValueError(f"--save {path}: a directory that holds other files and no {MANIFEST}; give a new "
                         "directory (or an old bundle, which is replaced)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--save {path}: cannot write in {parent} (permission denied)")
    return path


def manifest_of(record: dict, dataset, config: TrainConfig) -> dict:
    """The manifest of a model trained (by `ifm.training.loop.train`) on `dataset`, whose
    `encoding` it keeps."""
    if dataset.encoding is None:
        raise ValueError("a bundle needs the encoding of your own data (train with --data, not --dataset)")
    labels = dataset.train.y
    pretrain = record.get("pretrain") or {}
    return {
        "ifm_bundle": FORMAT, "ifm_version": __version__, "torch_version": torch.__version__,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": config.model, "recipe": config.recipe, "config": config.to_dict(),
        "num_features": dataset.num_features, "num_fields": dataset.num_fields,
        "task": dataset.task, "label_range": [float(labels.min()), float(labels.max())]
        if dataset.task == "regression" and config.bound_predictions else None,
        "encoding": dataset.encoding.to_dict(),
        "data": portable_provenance(dataset.provenance),
        "metrics": {"valid": record["valid"], "test": record["test"], "best_epoch": record["best_epoch"],
                    "epochs_run": record["epochs_run"]},
        "fm_baseline": {k: pretrain[k] for k in ("valid", "test", "best_epoch") if k in pretrain} or None,
    }


def save(directory, model, manifest: dict) -> Path:
    """Write the bundle of `model` and its `manifest` (`manifest_of`) atomically to `directory`."""
    path = check_target(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
        (tmp / MANIFEST).write_text(json.dumps(clean_json(manifest), indent=1, allow_nan=False) + "\n")
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------------------- loading
def load(directory, device: str = "cpu") -> "Bundle":
    """The bundle in `directory`, its model on `device`, ready to score rows."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise BundleError(f"--model {path}: no such directory (a model bundle is the directory train --save wrote)")
    if not (path / MANIFEST).is_file():
        raise BundleError(f"--model {path}: not a model bundle (no {MANIFEST}; train --save DIR writes one)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"--model {path / MANIFEST}: not JSON ({err})") from None
    version = manifest.get("ifm_bundle") if isinstance(manifest, dict) else None
    if not isinstance(version, int):
        raise BundleError(f"--model {path / MANIFEST}: not an ifm bundle manifest (no ifm_bundle format number)")
    if version > FORMAT:
        raise BundleError(f"--model {path}: bundle format {version} was written by ifm {manifest.get('ifm_version')}, "
                          f"newer than this ifm {__version__} reads (format {FORMAT}): upgrade ifm")
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BundleError(f"--model {path}: {WEIGHTS} is missing") from None
    except Exception as err:        # torch raises many kinds (zip, pickle, EOF) for a damaged file
        raise BundleError(f"--model {path / WEIGHTS}: not a saved state ({type(err).__name__})") from None
    return Bundle(manifest, state, device)


class Bundle:
    """A saved model and its encoding: `predict`, `factors`, `terms` and `score` of raw rows."""

    def __init__(self, manifest: dict, state: dict, device: str = "cpu"):
        self.manifest = manifest
        self.encoding = Encoding.from_dict(manifest["encoding"])
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        self.config = TrainConfig(**{k: v for k, v in manifest["config"].items() if k in known})
        self.device = torch.device(device)
        self.model = build_model(self.config.model, manifest["num_features"], manifest["num_fields"],
                                 self.config.embedding_size, **self.config.model_options)
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        ids = self.encoding.field_ids()
        rows = max(len(i) for i in ids)
        self.model.use_feature_fields(torch.as_tensor(np.stack([np.resize(i, rows) for i in ids], axis=1),
                                                      device=self.device))
        self.last: Encoded | None = None       # the encoding of the rows scored last (counts of missing and rare)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"<{DISPLAY_NAMES[m['model']]} bundle: {m['task']} on {len(self.encoding.fields)} fields "
                f"({', '.join(self.encoding.fields[:6])}{', ...' if len(self.encoding.fields) > 6 else ''}), "
                f"recipe {m['recipe']}, test {m['metrics']['test']}>")

    @property
    def task(self) -> str:
        return self.encoding.task

    def encode(self, data) -> Encoded:
        """Rows as feature ids: `data` is a DataFrame or the path of a CSV/TSV or libfm file."""
        from ifm.data.userdata import libfm_table, read_table

        if isinstance(data, pd.DataFrame):
            frame, source = as_text(data), data.attrs.get("source", "the rows given")
        else:
            path = Path(data).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"--data: {path} is not a readable file")
            csv_like = path.suffix.lower() in (".csv", ".tsv")
            frame, source = (read_table(path) if csv_like else libfm_table(path)), str(path)
        self.last = self.encoding.transform(frame, source)
        return self.last

    def extra_columns(self, data) -> list[str]:
        """Columns of `data` the model does not read (ignored, and said by the commands)."""
        columns = list(data.columns) if isinstance(data, pd.DataFrame) else []
        return [c for c in columns if c not in self.encoding.fields and c != self.encoding.target]

    def outputs(self, encoded: Encoded) -> torch.Tensor:
        """The model's raw outputs: logits (CTR) or values (regression)."""
        return predict(self.model, torch.as_tensor(encoded.x, device=self.device)).cpu()

    def predict(self, data) -> np.ndarray:
        """One prediction per row: the click probability (CTR) or the value (regression, bounded
        to the training labels' range as in training)."""
        return self._to_prediction(self.outputs(self.encode(data))).numpy()

    def _to_prediction(self, out: torch.Tensor) -> torch.Tensor:
        if self.task == "ctr":
            return torch.sigmoid(out.double())
        low_high = self.manifest.get("label_range")
        return out.double().clamp(*low_high) if low_high else out.double()

    def metrics(self, data) -> dict:
        """The training metrics (AUC and log loss, or RMSE and MAE) of `data`, which holds the target."""
        encoded = self.encode(data)
        if encoded.y is None:
            raise ValueError(f"the rows lack the target column {self.encoding.target!r}: no metrics")
        return evaluate(self.outputs(encoded), torch.as_tensor(encoded.y), self.manifest["task"],
                        self.manifest.get("label_range"))

    @torch.no_grad()
    def factors_and_terms(self, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(m [rows, h], terms [rows, h], constant [rows]): IFM's or DIFM's factors (1 for an FM) and the
        additive split of the raw output, constant + sum_i terms_i, with
            terms_i = m_i w_i + 1/2 sum_{j != i} sum_k a_k (m_i v_i,k)(m_j v_j,k),
        where a (and a constant b) is what the model's pooling does to the pooled interaction
        vector at evaluation: nothing (a = 1), dropout (a = 1) or batch norm (an affine map)."""
        name = self.config.model
        if name not in ("fm",) + INPUT_AWARE:
            raise ValueError(f"factors and terms are those of IFM and DIFM (and an FM's, all 1); this bundle is a "
                             f"{DISPLAY_NAMES[name]}")
        model, out_m, out_t, out_c = self.model, [], [], []
        a, b = _pool_affine(model.pool, model.embedding.weight.shape[1], self.device)
        x_all = torch.as_tensor(encoded.x, device=self.device)
        for start in range(0, len(x_all), EVAL_BATCH):
            x = x_all[start:start + EVAL_BATCH]
            m = model.factors(x) if name in INPUT_AWARE else torch.ones(x.shape, device=self.device)
            mv = m.unsqueeze(-1) * model.embedding(x)                        # [rows, h, k]
            pair = 0.5 * (a * mv * (mv.sum(dim=1, keepdim=True) - mv)).sum(dim=-1)
            out_m.append(m)
            out_t.append(m * model.linear(x) + pair)
            out_c.append((model.linear.bias + b.sum()).expand(len(x)))
        return torch.cat(out_m).cpu(), torch.cat(out_t).cpu(), torch.cat(out_c).cpu()

    def factors(self, data) -> pd.DataFrame:
        """The input-aware factor m_x,i of every field of every row, one column per field: IFM's
        (each row's sum to h, the number of fields) or DIFM's (m_vec + m_bit, not normalised)."""
        m, _, _ = self.factors_and_terms(self.encode(data))
        return pd.DataFrame(m.numpy(), columns=self.encoding.fields)

    def score(self, data, factors: bool = False) -> pd.DataFrame:
        """One row per input row: `prediction`, and with `factors` each field's factor m_<field>
        and term term_<field> (on the logit scale for CTR) and the `constant` they add to."""
        encoded = self.encode(data)
        out = pd.DataFrame({"prediction": self._to_prediction(self.outputs(encoded)).numpy()})
        if factors:
            m, terms, constant = self.factors_and_terms(encoded)
            fields = self.encoding.fields
            out = pd.concat([out, pd.DataFrame(m.numpy(), columns=[f"m_{f}" for f in fields]),
                             pd.DataFrame(terms.numpy(), columns=[f"term_{f}" for f in fields]),
                             pd.DataFrame({"constant": constant.numpy()})], axis=1)
        return out


def _pool_affine(pool, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with pool(z) = a * z + b at evaluation, for the pools the models use."""
    a, b = torch.ones(k, device=device), torch.zeros(k, device=device)
    layers = [] if pool is None else list(pool) if isinstance(pool, torch.nn.Sequential) else [pool]
    for layer in layers:
        if isinstance(layer, torch.nn.BatchNorm1d):
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            a, b = a * scale, b * scale + layer.bias - layer.running_mean * scale
        elif not isinstance(layer, (Dropout, torch.nn.Dropout)):
            raise ValueError(f"no additive split through a {type(layer).__name__} on the pooled vector")
    return a, b


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame's cells as the strings a CSV holds: whole floats without '.0' (a column of ids
    with a missing cell is read by pandas as floats), missing cells empty."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_float_dtype(column):
            whole = column.dropna().mod(1).eq(0).all()
            out[name] = column.map(lambda v: "" if pd.isna(v) else (f"{int(v)}" if whole else repr(float(v))))
        else:
            out[name] = column.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return pd.DataFrame(out)
