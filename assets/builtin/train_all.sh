#!/usr/bin/env bash
# Reproduces the shipped built-in weights in one command, from the repository root:
#
#     bash assets/builtin/train_all.sh
#
# Exports the world's data set with the Rust exporter, runs the training stages the
# shipped weights went through and copies the result (weights, train_log.csv, loss.png) into
# assets/builtin/. Needs PyTorch, diffusers, transformers, safetensors and tokenizers from
# PyPI. About 100 minutes of training on 2 CPU cores, plus the release build of the exporter.
# Stages end at fixed step counts, so a slower machine takes longer but trains the same
# schedule; results match the shipped weights up to floating-point thread order.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
data="$root/target/builtin-world"
work="$root/target/builtin-training"
no_time_limit=(--minutes 100000)

cargo run --release --locked --example export_world_dataset -- --count 30000 --out "$data"

# Stage 1: 4500 steps, loss on the implied velocity (weights low noise most).
python3 "$here/train.py" --data "$data" --out "$work/stage1" "${no_time_limit[@]}" --steps 4500

# Stages 2 and 3: loss on the clean image itself, so high noise, where only the caption can
# say which colour the character is, weighs as much as low noise; a fifth of the times drawn
# uniform. Stage 2 was stopped early (1628 of its 3200 planned steps).
stage() {
    local from="$1" to="$2" first="$3" planned="$4" stop="$5"
    mkdir -p "$work/$to"
    cp "$work/$from/train_log.csv" "$work/$to/"
    python3 "$here/train.py" --data "$data" --out "$work/$to" "${no_time_limit[@]}" \
        --init "$work/$from" --first-step "$first" --steps "$planned" --stop-step "$stop" \
        --lr 2e-4 --warmup 50 --loss-space sample --uniform-t 0.2
}
stage stage1 stage2 4500 3200 1628
stage stage2 stage3 6128 4800 4800

# Stage 4: the same loss plus the grounding loss (grounding.py): every single block's
# image-to-text attention is asked to put the character tokens on the character and action
# words and the rest on the background words, as CharaConsist's masks read it (eqs. 6-9).
mkdir -p "$work/stage4"
cp "$work/stage3/train_log.csv" "$work/stage4/"
python3 "$here/train.py" --data "$data" --out "$work/stage4" "${no_time_limit[@]}" \
    --init "$work/stage3" --first-step 10928 --steps 3000 \
    --lr 2e-4 --warmup 50 --loss-space sample --uniform-t 0.2 --grounding-weight 0.1 --no-compile
final=stage4

for part in transformer text_encoder; do
    rm -rf "${here:?}/$part"
    cp -r "$work/$final/$part" "$here/$part"
done
cp "$work/$final/train_log.csv" "$work/$final/loss.png" "$here/"
echo "weights written to $here"
