"""A run record as a row of a study's tidy frame: its settings, data, device, metrics and where
it came from, and the words the book uses for the data a record was made on (its kind, label and
note), all read from the record, never from loading the data."""
from __future__ import annotations

import hashlib

from ifm.data.registry import DATASET_NAMES, DATASETS
from ifm.models import DISPLAY_NAMES
from ifm.runs.records import _identity_text


def row_of(exp, record: dict, dataset_name: str, **extra) -> dict:
    """One run of `exp` (a runner: its profile and recipe label the row) as a row of a study; the
    data's description comes from the record, not from loading it."""
    prov = record["dataset"]["provenance"]
    sizes = prov.get("sizes", {})
    env = record.get("environment", {})
    config = record["config"]
    row = {"profile": exp.profile.name, "recipe": exp.profile.recipe,     # a twin's record serves this recipe
           "dataset": dataset_name, "dataset_label": dataset_label(prov),
           "model": config["model"], "model_name": DISPLAY_NAMES.get(config["model"], config["model"]),
           "seed": config["seed"], **extra,
           "train_instances": sizes.get("train"), "valid_instances": sizes.get("valid"),
           "test_instances": sizes.get("test"), "data_fraction": prov.get("fraction_of_paper"),
           "data_note": data_note(prov), "device": env.get("device"), "device_name": env.get("device_name"),
           "epochs_run": record.get("epochs_run"), "best_epoch": record.get("best_epoch"),
           "diverged": record.get("diverged") is True,
           "kept_epoch": record.get("kept_epoch", record.get("best_epoch")),
           "wall_seconds": record.get("wall_seconds"), "samples_per_second": record.get("samples_per_second"),
           "key": record["cache"]["key"], "written_at_utc": record["cache"].get("written_at_utc"),
           "package_version": env.get("ifm"), "training_version": record.get("training_version"),
           "data_identity": hashlib.sha256(_identity_text(record["cache"]["material"]["data"]).encode())
           .hexdigest()[:12]}
    for split in ("valid", "test"):
        for metric, value in (record.get(split) or {}).items():
            row[f"{split}_{metric}"] = num(value)
    return row


def num(value) -> float:
    return float("nan") if value is None else float(value)


def data_kind(prov: dict) -> str:
    """The provenance's data kind (exact, local: split files that are not the upstream bytes,
    reconstructed, raw, stand-in, sample, partial, synthetic, user). Records made before the data layer wrote it say it only in prose: read it there, once."""
    if prov.get("data_kind"):
        return prov["data_kind"]
    notes = " ".join(prov.get("notes", []))
    for word, kind in (("stand-in", "stand-in"), ("sample", "sample"), ("synthetic", "synthetic"),
                       ("partial data", "partial")):
        if word in notes:
            return kind
    return "exact"


def dataset_label(prov: dict) -> str:
    """Short honest label: 'Frappe (paper split, reconstructed)', 'Frappe (30% of the paper's
    data)', 'MovieLens stand-in', 'Avazu 9,999-row sample', ..."""
    name = prov.get("dataset", "?")
    base = DATASET_NAMES.get(name, name)
    kind = data_kind(prov)
    if kind == "reconstructed":
        split = "BARS split" if DATASETS.get(name, {}).get("bars") else "paper split"
        return f"{base} ({split}, reconstructed)"
    if kind == "user":
        return f"{base} (your data)"
    if kind == "stand-in":
        return f"{base} stand-in"
    if kind == "local":
        return f"{base} (local files, not the upstream bytes)"
    if kind == "sample":
        return f"{base} {prov['sizes']['total']:,}-row sample"
    fraction = prov.get("fraction_of_paper")
    if fraction is not None and fraction < 0.999:
        return f"{base} ({100 * fraction:.2g}% of the paper's data)"
    return base


def data_note(prov: dict) -> str:
    """Training size, share of the paper's data, and for data that is not the paper's, what it is."""
    sizes = prov.get("sizes", {})
    text = f"{sizes.get('train', 0):,} training instances"
    if prov.get("paper_instances"):
        text += (f" ({sizes.get('total', 0):,} of the paper's {prov['paper_instances']:,} instances in all,"
                 f" {100 * prov['fraction_of_paper']:.3g}%)")
    if data_kind(prov) == "reconstructed":
        return f"{text}; {prov['split_rule']}"
    notes = prov.get("notes", [])[:1] if data_kind(prov) in ("stand-in", "sample", "synthetic", "partial", "local") else []
    return "; ".join([text] + notes)
