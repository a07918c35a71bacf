"""bench/logit_methods.py's --resume: an interrupted or extended table runs only its missing (pair, method, seed) runs,
and refuses a CSV written under another protocol. Training is replaced by a stub that records its calls."""
import sys
from pathlib import Path
import pandas as pd
import pytest
sys.path.insert(0, str(Path(__file__).parents[1]/'bench'))
import logit_methods as lm


@pytest.fixture
def calls(monkeypatch):
    done = []
    def train(dls, name, epochs, lr, seed, teacher=None, method=None, **kw):
        done.append((method, seed))
        return None, dict(best_epoch=epochs, heldout_acc=0.5, test_acc=0.6 + 0.01 * seed + 0.02 * (method == 'dkd'), sec_per_epoch=1.0, params=10)
    teacher = lambda args, dls, name, log: (None, dict(best_epoch=1, heldout_acc=0.9, test_acc=0.9, sec_per_epoch=1.0, params=99), Path('t.pth'))
    monkeypatch.setattr(lm, 'train', train)
    monkeypatch.setattr(lm, 'get_teacher', teacher)
    monkeypatch.setattr(lm, 'make_data', lambda *a, **k: (None, None, (1, 1, 1, 1)))
    return done


def test_resume_runs_only_missing_rows(tmp_path, calls):
    out = str(tmp_path/'table')
    base = ['--pairs', 'a:b', '--epochs', '2', '--out', out, '--no-cache']
    lm.main(base + ['--methods', 'baseline', 'KD', '--seeds', '1'])
    assert calls == [(None, 0), ('kd', 0)]
    calls.clear()
    lm.main(base + ['--methods', 'baseline', 'KD', 'DKD', '--seeds', '2', '--resume'])
    assert calls == [('dkd', 0), (None, 1), ('kd', 1), ('dkd', 1)]   # seed 0's baseline and KD are kept
    df = pd.read_csv(out + '.csv')
    assert len(df) == 7 and list(df.method[:1]) == ['teacher'] and (df.method == 'teacher').sum() == 1
    assert df.command.nunique() == 2 and 'Runs:' in Path(out + '.md').read_text()
    table = lm.summarize(df).set_index('method')                        # gains paired by seed: DKD is 2 points above the others in every seed
    assert table.loc['DKD', 'gain over baseline (points)'] == '2.00 ± 0.00' and table.loc['baseline', 'gain over baseline (points)'] == ''
    assert table.loc['teacher', 'gain over KD (points)'] == '' and table.loc['baseline', 'gain over KD (points)'] == '0.00 ± 0.00'
    calls.clear()
    lm.main(base + ['--methods', 'baseline', 'KD', 'DKD', '--seeds', '2', '--resume'])
    assert calls == []                                                   # nothing left to run
    with pytest.raises(ValueError, match='epochs: 2 there, 3 here'):    # another protocol: refused
        lm.main(['--pairs', 'a:b', '--epochs', '3', '--out', out, '--no-cache', '--resume'])



def test_joined_table_states_the_runs_protocol(tmp_path, calls):
    "--from-csv writes the protocol of the runs joined (not the join command's defaults) and refuses runs of two protocols"
    a, b, c = (str(tmp_path/n) for n in 'abc')
    lm.main(['--pairs', 'a:b', '--epochs', '3', '--methods', 'baseline', '--out', a, '--no-cache', '--seeds', '1'])
    lm.main(['--pairs', 'a:b', '--epochs', '3', '--methods', 'KD', '--out', b, '--no-cache', '--seeds', '1'])
    lm.main(['--from-csv', a + '.csv', b + '.csv', '--out', c])
    assert '\n\n3 epochs (one-cycle' in Path(c + '.md').read_text()
    lm.main(['--pairs', 'a:b', '--epochs', '4', '--methods', 'DKD', '--out', b, '--no-cache', '--seeds', '1'])
    with pytest.raises(ValueError, match='differ in epochs'): lm.main(['--from-csv', a + '.csv', b + '.csv', '--out', c])

def test_joined_table_of_some_seeds(tmp_path, calls):
    "--from-csv with --seed-list: the table of those seeds only (the teacher row kept); the CSV is written whole"
    a, c = str(tmp_path/'a'), str(tmp_path/'c')
    lm.main(['--pairs', 'a:b', '--methods', 'baseline', 'DKD', '--out', a, '--no-cache', '--seeds', '3'])
    assert not list(tmp_path.glob('*.tmp'))                              # written through a temporary file, then renamed
    lm.main(['--from-csv', a + '.csv', '--seed-list', '0', '--out', c])
    df = pd.read_csv(c + '.csv')
    assert sorted(df.seed) == [0, 0, 0] and set(df.method) == {'teacher', 'baseline', 'DKD'}
    table = lm.summarize(df).set_index('method')
    assert table.loc['DKD', 'seeds'] == 1 and table.loc['DKD', 'gain over baseline (points)'] == '2.00 ± 0.00'
    lm.main(['--from-csv', a + '.csv', '--out', c])                     # without it: every seed
    assert len(pd.read_csv(c + '.csv')) == 7


def test_joined_table_of_some_methods(tmp_path, calls):
    "--from-csv with --methods: those methods only, a label's suffix ignored (the teacher row kept); without it: all"
    a, b, c = (str(tmp_path/n) for n in 'abc')
    lm.main(['--pairs', 'a:b', '--methods', 'baseline', 'KD', 'DKD', '--out', a, '--no-cache', '--seeds', '1'])
    lm.main(['--pairs', 'a:b', '--methods', 'DKD', '--label-suffix', ' (x)', '--out', b, '--no-cache', '--seeds', '1'])
    lm.main(['--from-csv', a + '.csv', b + '.csv', '--methods', 'baseline', 'DKD', '--out', c])
    assert sorted(set(pd.read_csv(c + '.csv').method)) == ['DKD', 'DKD (x)', 'baseline', 'teacher']
    lm.main(['--from-csv', a + '.csv', b + '.csv', '--out', c])
    assert 'KD' in set(pd.read_csv(c + '.csv').method)
    lm.main(['--from-csv', a + '.csv', b + '.csv', '--methods=KD', '--out', c])  # argparse's other spelling filters too
    assert sorted(set(pd.read_csv(c + '.csv').method)) == ['KD', 'teacher']


def test_recipes_on_fashion_mnist(tmp_path):
    "Every recipe row runs end to end on real data from a teacher shipped (into tmp_path) with its route"
    import train_teachers
    train_teachers.main(['model_25k_wo_dw', '--epochs', '2', '--fraction', '0.02', '--route-every', '1', '--out', str(tmp_path/'w')])
    out = tmp_path/'table'
    lm.main(['--pairs', 'model_25k_wo_dw:model_25k_wo_dw', '--shipped-teachers', '--shipped-folder', str(tmp_path/'w'),
             '--assistant', 'model_25k_wo_dw', '--methods', 'baseline', *lm.RECIPES, '--fraction', '0.02', '--epochs', '2',
             '--seeds', '1', '--teachers', str(tmp_path/'t'), '--out', str(out), '--note', 'Ran on one test machine.'])
    df = pd.read_csv(out.with_suffix('.csv'))
    md = out.with_suffix('.md').read_text()
    assert 'Teacher run at every step: TAKD, RCO, RCO greedy, Tf-KD self. No teacher: CS-KD, Tf-KD virtual.' in md
    assert '\n\nRan on one test machine.\n\n' in md
    assert list(df.method) == ['teacher', 'assistant', 'baseline', *lm.RECIPES]
    assert df.test_acc.between(0, 1).all() and (df.best_epoch >= 1).all()
    anchors = df.set_index('method').anchors
    assert anchors['RCO'] == '0 1' and anchors['RCO greedy'].endswith(' 1')   # equal blocks; greedy ends on the final anchor


def test_baselines_join_patient_rows(tmp_path, calls):
    "bench/baselines.py --from-csv takes the student-alone rows of patient runs (protocol from their command) beside its own"
    import baselines, patient
    a, b, c = tmp_path/'patient', tmp_path/'own.csv', tmp_path/'joined'
    lm.main(['--methods', 'baseline', 'KD', '--seeds', '2', '--no-cache', '--out', str(a)], defaults=patient.DEFAULTS, script='bench/patient.py')
    own = dict(pair=baselines.PAIR, model='model_25k_w_dw', method='baseline', best_epoch=20, heldout_acc=0.9, sec_per_epoch=1.0,
               params=25000, command='python bench/baselines.py', epochs=20, fraction=1.0, holdout=0.1, bs=128, lr=0.01)
    pd.DataFrame([dict(own, seed=s, test_acc=0.9 + s / 100) for s in (0, 1)]).to_csv(b, index=False)
    baselines.main(['--from-csv', str(a) + '.csv', str(b), '--note', 'Rows from two machines.', '--out', str(c)])
    df = pd.read_csv(str(c) + '.csv')
    assert sorted(df.model.unique()) == ['model_25k_w_dw', 'model_25k_wo_dw'] and (df.method == 'baseline').all()
    assert (df.pair == baselines.PAIR).all() and (df.epochs == 20).all() and len(df) == 4    # KD and teacher rows left out
    md = Path(str(c) + '.md').read_text()
    assert '| model_25k_wo_dw |' in md and '\n\nRows from two machines.\n' in md
    pd.DataFrame([dict(own, seed=0, test_acc=0.9, epochs=10)]).to_csv(b, index=False)
    with pytest.raises(SystemExit, match='differ in epochs'): baselines.main(['--from-csv', str(a) + '.csv', str(b), '--out', str(c)])


class Killed(Exception): "stands for the process being killed"


def test_killed_run_goes_on_from_its_checkpoint(tmp_path):
    "A student-alone run killed after an epoch and started again from its checkpoint ends as the run never killed did"
    from fastai.callback.core import Callback
    dls, _, _ = lm.make_data(0.01, 0.1, 64, augment=True)
    whole, rec = lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 0, checkpoint=tmp_path/'whole.pt')
    class KillAfterEpoch(Callback):
        order = lm.EpochCheckpoint.order + 1  # once the epoch's checkpoint is written
        def after_epoch(self):
            if self.epoch == 1: raise Killed("killed after epoch 1")
    fit = lm.Learner.fit
    def fit_then_killed(self, *a, cbs=None, **k): return fit(self, *a, cbs=[*cbs, KillAfterEpoch()], **k)
    ck = tmp_path/'killed.pt'
    with pytest.MonkeyPatch.context() as m, pytest.raises(Killed):
        m.setattr(lm.Learner, 'fit', fit_then_killed)
        lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 0, checkpoint=ck)
    assert lm.torch.load(ck, weights_only=False)['epoch'] == 2
    dls, _, _ = lm.make_data(0.01, 0.1, 64, augment=True)              # a new process: new loaders
    resumed, rec2 = lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 0, checkpoint=ck)
    assert all(lm.torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    last = [lm.torch.load(f, weights_only=False)['model'] for f in (tmp_path/'whole.pt', ck)]  # the last epoch's weights (not the best's)
    assert all(lm.torch.equal(last[0][k], last[1][k]) for k in last[0])
    assert {k: rec[k] for k in ('best_epoch', 'heldout_acc', 'test_acc')} == {k: rec2[k] for k in ('best_epoch', 'heldout_acc', 'test_acc')}
    assert rec2['sec_per_epoch'] > 0
    again, rec3 = lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 0, checkpoint=ck)  # all epochs done (killed before its row): the best weights
    assert all(lm.torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values()))
    assert rec3['test_acc'] == rec['test_acc'] and rec3['best_epoch'] == rec['best_epoch']
    with pytest.raises(ValueError, match='checkpoint of another run'): lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 1, checkpoint=ck)
    with pytest.raises(ValueError, match='student alone only'): lm.train(dls, 'model_25k_wo_dw', 3, 1e-2, 0, method='kd', checkpoint=ck)
