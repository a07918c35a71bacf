#!/usr/bin/env bash
# One command on the GPU machine some sessions are lent (DEVELOPERS.md): install the carried fastai wheels (.whl/), point
# kd_fastai at the carried Fashion-MNIST (.fmnist/), run COMMAND under a time limit, then pack the FOLDERs it wrote into
# one small tar in $OUT (only a few files, none large, come back from a call; checkpoints and caches stay behind).
#
#   make device-carry                                   # here, once: fills .whl/ and .fmnist/ (both git-ignored)
#   bash bench/device.sh SECONDS 'COMMAND' FOLDER...    # there, as the device call's command, with carry [".whl", ".fmnist"]
#   e.g. bash bench/device.sh 470 'bash bench/six_pairs.sh kd_runs/six --seeds 3 --epochs 8 --fraction 0.06
#        --teacher-fraction 0.3 --teacher-epochs 8 --threads 1' kd_runs/six
#
# Put what a second call resumes from under kd_runs/ (ignored paths stay on a warm machine between calls; untracked
# files under results/ do not). The exit status is COMMAND's (124: stopped by the limit, its finished runs kept).
set -u
LIMIT=${1:?usage: bash bench/device.sh SECONDS COMMAND FOLDER...}; CMD=${2:?usage: bash bench/device.sh SECONDS COMMAND FOLDER...}; shift 2
SITE=${SITE:-/tmp/site}
if compgen -G '.whl/*.whl' > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE:$PWD
fi
[ -d .fmnist ] && export KD_FASTAI_FMNIST=$PWD/.fmnist
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
start=$(date +%s)
timeout "$LIMIT" bash -c "$CMD"; rc=$?
echo "command exit $rc after $(( $(date +%s) - start )) s"
if [ $# -gt 0 ]; then
  tgz=${OUT:-.}/outputs.tgz
  tar czf "$tgz" --exclude='*.pth' --exclude='*.pt' --exclude='*.npy' --exclude='*.npz' "$@" && ls -l "$tgz" | awk '{print $5, $9}'
fi
exit $rc
