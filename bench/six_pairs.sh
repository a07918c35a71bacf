#!/usr/bin/env bash
# Seed 003's six CIFAR-benchmark pairs at Fashion-MNIST scale, every logit and feature method, as parallel processes
# (meant for a machine with a GPU and many cores: two processes per pair, 12 in all).
#
#   bash bench/six_pairs.sh OUT [protocol arguments of bench/logit_methods.py ...]
#   bash bench/six_pairs.sh results/six_pairs_runs --seeds 3 --epochs 10 --fraction 0.06 --teacher-fraction 0.3 --teacher-epochs 10
#
# Per pair, `bench/logit_methods.py` trains the teacher (seed 0) and runs the logit methods (MLKD last: the costliest);
# `bench/feature_methods.py` starts once that teacher is saved and runs the feature methods from it (the baseline
# and KD rows of a pair are the logit process's). wrn_40_2 teaches two pairs: it is trained once, by the first.
# Each process writes OUT/{logit,feature}_TEACHER_STUDENT.csv after every run (`--resume` continues it) and its log
# beside it; the teachers and caches go to kd_runs/six_pairs/. Join the CSVs into one table with --from-csv:
#   python bench/logit_methods.py --from-csv OUT/*.csv [same protocol arguments] --out results/six_pairs
set -u
OUT=${1:?usage: bash bench/six_pairs.sh OUT [protocol arguments]}; shift
PROTOCOL=("$@")
PY=${PYTHON:-python}
TEACHERS=${TEACHERS:-kd_runs/six_pairs}
read -r -a PAIRS <<< "${PAIRS:-cifar_resnet56:cifar_resnet20 cifar_resnet110:cifar_resnet32 cifar_resnet32x4:cifar_resnet8x4 wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 vgg13:vgg8}"  # env PAIRS: others
LOGIT=(baseline KD KD+LS DKD DKD+LS DIST SDD CLKD MLKD)
FEATURE=(FitNet AT RKD CRD OFD ReviewKD CRD+KD)
mkdir -p "$OUT"
trap 'kill $(jobs -p) 2>/dev/null; exit' EXIT TERM INT  # a stopped script stops its runs (each CSV holds every finished run)

wait_for_teacher() {  # until LOG says that TEACHER is trained and saved (or loaded)
  until grep -q "^teacher $2: " "$1" 2>/dev/null; do sleep 5; done
}

declare -A FIRST_LOG  # teacher -> log of the process that trains it
for pair in "${PAIRS[@]}"; do
  t=${pair%%:*}; s=${pair##*:}; name=${t#cifar_}_${s#cifar_}; dir=$TEACHERS/$name
  mkdir -p "$dir"
  logit_log=$OUT/logit_$name.log
  (
    if [ -n "${FIRST_LOG[$t]:-}" ]; then  # a teacher of an earlier pair: wait for it and take a copy (own cache folder)
      wait_for_teacher "${FIRST_LOG[$t]}" "$t"; cp "$TEACHERS"/*/"$t"_*.pth "$dir"/
    fi
    exec $PY bench/logit_methods.py --pairs "$pair" "${PROTOCOL[@]}" --methods "${LOGIT[@]}" --resume \
      --teachers "$dir" --out "$OUT/logit_$name"
  ) > "$logit_log" 2>&1 &
  FIRST_LOG[$t]=${FIRST_LOG[$t]:-$logit_log}
  (
    wait_for_teacher "$logit_log" "$t"
    exec $PY bench/feature_methods.py --pairs "$pair" "${PROTOCOL[@]}" --methods "${FEATURE[@]}" --resume \
      --teachers "$dir" --out "$OUT/feature_$name"
  ) > "$OUT/feature_$name.log" 2>&1 &
done
wait
