#!/usr/bin/env bash
# `make model`: the packaged default CDL model, made with the commands users run.
#
#   1. `phagoflow simulate` the unlabelled training plates -- their truth is never read by
#      training: normal seed 100 and harder seed 200 (12 wells x 4 fields each), and one plate
#      (4 wells x 3 fields, training seed 101) of every stress-suite condition at the model's
#      0.2 um/px (STRESS_CONDITIONS; other pixel sizes are met by resampling at inference), so
#      the model has seen other cell models, backgrounds and channel orders than the presets';
#   2. `phagoflow train` on them with CIP weak labels and the CDL recipe (scripts/cdl_recipe.json:
#      the paper's SGD settings, 12 epochs of 256 patches, Dice + 0.5 x cross-entropy; seed 0,
#      2 threads, so the run is deterministic on CPU);
#   3. `phagoflow simulate` the held-out plates (seed 900, 12 wells x 3 fields per preset; a
#      validation seed under docs/experiment.md's protocol) and `phagoflow evaluate` CIP and the
#      new model on them against the truth;
#   4. write the scores and these commands into the card (`python -m phagoflow.embedded.card`)
#      and copy the model folder to MODEL_DIR.
#
# Environment: BIN (.venv/bin), STRESS_CONDITIONS (empty: presets only), MODEL_WORK (build/default-model: plates, evaluations, the new model),
# MODEL_DIR (services/phagoflow/models/default; where the model is installed).
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${MODEL_WORK:-build/default-model}
DEST=${MODEL_DIR:-services/phagoflow/models/default}
RECIPE=${RECIPE:-scripts/cdl_recipe.json}
# the stress suite's conditions at 0.2 um/px besides the presets (phagoflow.core.stress)
STRESS_CONDITIONS=${STRESS_CONDITIONS-alt_normal sparse_large low_snr vignetting_uneven channel_order partial_quenching bleed_through elongated_clustered}
COMMANDS="$WORK/commands.txt"

rm -rf "$WORK"
mkdir -p "$WORK"
: >"$COMMANDS"

# Run `phagoflow ARGS...` and record the command (as a user would type it) for the card.
pf() {
    echo "phagoflow $*" >>"$COMMANDS"
    echo "+ phagoflow $*"
    "$BIN/phagoflow" "$@"
}

pf simulate "$WORK/train/normal-100" --preset normal --seed 100 --wells 12 --fields 4 --plate normal-100
pf simulate "$WORK/train/harder-200" --preset harder --seed 200 --wells 12 --fields 4 --plate harder-200
plates=("$WORK/train/normal-100" "$WORK/train/harder-200")
for condition in $STRESS_CONDITIONS; do
    pf simulate "$WORK/train/$condition-101" --condition "$condition" --seed 101 --wells 4 --fields 3
    plates+=("$WORK/train/$condition-101")
done
pf train "${plates[@]}" --out "$WORK/model" --labels cip \
    --config "$RECIPE" --seed 0 --threads 2 --name phagoflow-cdl-default
evaluations=()
for preset in normal harder; do
    plate="$WORK/heldout/$preset-900"
    pf simulate "$plate" --preset "$preset" --seed 900 --wells 12 --fields 3 --plate "$preset-900"
    pf evaluate "$plate" --truth "$plate/truth" --methods cip,cdl --model "$WORK/model" \
        --json "$WORK/evaluation/$preset.json"
    evaluations+=("$preset=$WORK/evaluation/$preset.json")
done
"$BIN/python" -m phagoflow.embedded.card "$WORK/model" "${evaluations[@]}" \
    --commands "$COMMANDS" --recipe "$RECIPE" --made-by "make model (scripts/make_default_model.sh)"
mkdir -p "$DEST"
cp "$WORK/model/model.pt" "$WORK/model/model.onnx" "$WORK/model/card.json" "$DEST/"
echo "installed $DEST"
