"""bench/six_pairs.sh, the 12-process driver of the GPU tables, with a stand-in for Python that records each process
instead of training: two processes per pair, the feature process only once its pair's teacher is saved, a teacher of
two pairs trained once and copied, and a stopped script stops its runs."""
import os, signal, subprocess, time
from pathlib import Path
import pytest

ROOT = Path(__file__).parents[1]
FAKE = r'''#!/usr/bin/env bash
# stand-in for python: record the call; logit_methods.py "trains" (or loads) its teacher, then says so as the real one does
script=$1; shift
while [ $# -gt 0 ]; do case $1 in --pairs) pair=$2;; --teachers) dir=$2;; --out) out=$2;; esac; shift; done
t=${pair%%:*}
echo "$(date +%s.%N) start $(basename $script) $pair $dir $(ls $dir | tr '\n' ' ')" >> "$RECORD"
if [ "$(basename $script)" = logit_methods.py ]; then
  sleep "${FAKE_TEACHER_SECONDS:-1}"
  if [ -e "$dir/${t}_e8.pth" ]; then echo "teacher $t: loaded"; else touch "$dir/${t}_e8.pth"; echo "teacher $t: trained"; fi
  echo "$(date +%s.%N) teacher $pair" >> "$RECORD"
fi
sleep "${FAKE_RUN_SECONDS:-0}"
echo "pair,method" > "$out.csv"
'''

def run_six(tmp_path, pairs, **env):
    fake = tmp_path/'fakepy'; fake.write_text(FAKE); fake.chmod(0o755)
    e = dict(os.environ, PYTHON=str(fake), PAIRS=pairs, TEACHERS=str(tmp_path/'teachers'), RECORD=str(tmp_path/'record'), **env)
    return subprocess.Popen(['bash', 'bench/six_pairs.sh', str(tmp_path/'out'), '--seeds', '3', '--epochs', '2'],
                            cwd=ROOT, env=e, start_new_session=True)

def records(tmp_path): return [l.split() for l in (tmp_path/'record').read_text().splitlines()]

def test_processes_and_shared_teacher(tmp_path):
    p = run_six(tmp_path, 'wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 cifar_resnet56:cifar_resnet20')
    assert p.wait(timeout=60) == 0
    rec = records(tmp_path)
    starts = [(r[2], r[3]) for r in rec if r[1] == 'start']
    assert sorted(starts) == sorted((s, pair) for pair in ('wrn_40_2:wrn_16_2', 'wrn_40_2:wrn_40_1', 'cifar_resnet56:cifar_resnet20')
                                    for s in ('logit_methods.py', 'feature_methods.py'))       # two processes a pair
    t_teacher = {r[2]: float(r[0]) for r in rec if r[1] == 'teacher'}
    for r in rec:
        if r[1] == 'start' and r[2] == 'feature_methods.py':   # a feature process starts after its pair's teacher is saved ...
            assert float(r[0]) >= t_teacher[r[3]] and r[5:] == [f"{r[3].split(':')[0]}_e8.pth"]  # ... and sees it in its folder
    # wrn_40_2 is trained by the first of its pairs; the second waits, copies it into its own folder and loads it
    second = next(r for r in rec if r[1] == 'start' and r[2] == 'logit_methods.py' and r[3] == 'wrn_40_2:wrn_40_1')
    assert second[4].endswith('wrn_40_2_wrn_40_1') and second[5:] == ['wrn_40_2_e8.pth']
    logs = {f.name: f.read_text() for f in (tmp_path/'out').glob('logit_*.log')}
    assert logs['logit_wrn_40_2_wrn_16_2.log'].strip() == 'teacher wrn_40_2: trained'
    assert logs['logit_wrn_40_2_wrn_40_1.log'].strip() == 'teacher wrn_40_2: loaded'
    assert len(list((tmp_path/'out').glob('*.csv'))) == 6
    # the protocol arguments reach every process, with --resume (a second call goes on from the CSVs)
    assert all(r[4].startswith(str(tmp_path/'teachers')) for r in rec if r[1] == 'start')

def test_stopped_script_stops_its_runs(tmp_path):
    p = run_six(tmp_path, 'cifar_resnet56:cifar_resnet20', FAKE_TEACHER_SECONDS='0', FAKE_RUN_SECONDS='60')
    for _ in range(100):                     # both processes running
        if (tmp_path/'record').exists() and sum(r[1] == 'start' for r in records(tmp_path)) == 2: break
        time.sleep(0.1)
    else: pytest.fail('the two processes did not start')
    p.send_signal(signal.SIGTERM); p.wait(timeout=20)
    time.sleep(0.5)
    left = subprocess.run(['pgrep', '-f', str(tmp_path/'fakepy')], capture_output=True, text=True).stdout.split()
    try: assert left == [], f'runs left behind: {left}'
    finally: os.killpg(p.pid, signal.SIGKILL) if left else None
