#!/usr/bin/env bash
# The runs that want a GPU, behind one prepared command: the open benchmark's study (`tune`) first,
# then the paper profile's missing runs (`fill`), each on one CUDA device shared by many runs, in a
# time budget; the new records come back as one archive.
#
#   tools/device-runs.sh prepare               here: the data and the wheels the GPU machine lacks
#   tools/device-runs.sh run MINUTES [TUNE]    there: TUNE minutes of tune (default: half), then fill
#   tools/device-runs.sh unpack ARCHIVE        here: the records into results/ (never over a record)
#
# `prepare` copies $IFM_DATA_DIR's Frappe and MovieLens files into .devdata/ (ignored by git, never
# committed: Frappe's licence forbids redistribution) and downloads into .whl/ the wheels of the
# packages the machine's image lacks, at the versions of requirements.txt (Python 3.12, manylinux).
# `run` expects both in the working tree (the device tool's `carry: [".devdata", ".whl"]`) and
# writes $OUT/records.tgz (every record it made), $OUT/tune.log and $OUT/fill.log. The records name
# the device they ran on (environment.device). What a time limit stops is not written.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 tornado==6.6.1
zict==3.0.0 cloudpickle==3.1.3 toolz==1.2.0 fsspec==2026.9.0 click==8.5.1 optuna==5.1.0 alembic==1.20.1
Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0 greenlet"

case "${1:-}" in
prepare)
    : "${IFM_DATA_DIR:?set IFM_DATA_DIR to the data directory (e.g. ../shared/datasets)}"
    for d in frappe movielens-raw; do
        [ -d "$IFM_DATA_DIR/$d" ] || { echo "error: $IFM_DATA_DIR/$d: no such directory" >&2; exit 2; }
    done
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .devdata .whl && mkdir -p .devdata .whl
    cp -r "$IFM_DATA_DIR/frappe" "$IFM_DATA_DIR/movielens-raw" .devdata/
    chmod -R u+w .devdata
    platforms=""
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux1_x86_64; do platforms="$platforms --platform $p"; done
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d .whl $WHEELS
    du -sh .devdata .whl
    echo "carry [\".devdata\", \".whl\"] and run: tools/device-runs.sh run MINUTES"
    ;;
run)
    minutes="${2:?give the minutes the runs may take in all}"
    tune_minutes="${3:-$((minutes / 2))}"
    [ -d .devdata ] && [ -d .whl ] || { echo "error: .devdata/ or .whl/ missing: run 'prepare' here and carry both" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" IFM_DATA_DIR="$PWD/.devdata" PYTHONUNBUFFERED=1
    out="${OUT:-/tmp/device-runs}"; mkdir -p "$out"
    stamp=$(mktemp); started=$(date +%s)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
    python3 -m ifm tune --device cuda --runs-per-gpu 16 --time-limit "${tune_minutes}m" > "$out/tune.log" 2>&1 || true
    left=$(( minutes - ($(date +%s) - started) / 60 ))
    if [ "$left" -ge 2 ]; then
        python3 -m ifm fill --device cuda --runs-per-gpu 14 --time-limit "${left}m" > "$out/fill.log" 2>&1 || true
    fi
    find results -name '*.json' -newer "$stamp" -print0 | tar czf "$out/records.tgz" --null -T -
    echo "records made: $(tar tzf "$out/records.tgz" | wc -l) (in $out/records.tgz)"
    tail -n 3 "$out/tune.log" "$out/fill.log" 2>/dev/null || true
    ;;
unpack)
    archive="${2:?give the records.tgz that run wrote}"
    tar xzf "$archive" --skip-old-files
    echo "unpacked $(tar tzf "$archive" | wc -l) record(s); a record already here was kept"
    python3 -c "from ifm.runs.records import make_portable; print('paths of the GPU machine taken out:', make_portable('results'))"
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
