"""bench/results_tables.py and bench/leaderboard.py under the newest fastai/pandas; the notebook holds the full tests."""
import runpy, sys
from pathlib import Path
import pandas as pd
sys.path.insert(0, str(Path(__file__).parents[1]/'bench'))
from results_tables import leaderboard  # noqa: E402


def test_bench_writes_md_csv_png(tmp_path, monkeypatch):
    (tmp_path/'stagewise.csv').write_text('data,model,method,seed,params,epochs,accuracy,seconds\n'
                                          '1/4,r10,no teacher,0,80,5,0.88,10\n1/4,r10,no teacher,1,80,5,0.89,10\n'
                                          '1/4,r10,simultaneous,1,80,5,0.90,20\n1/4,r10,simultaneous,0,80,5,0.885,20\n')
    (tmp_path/'loaders.csv').write_text('loader,measure\nold,epoch\n')   # a cost benchmark: ignored
    out = tmp_path/'lb'/'leaderboard'
    monkeypatch.setattr(sys, 'argv', ['leaderboard.py', '--results', str(tmp_path), '--out', str(out)])
    runpy.run_path(str(Path(__file__).parents[1]/'bench'/'leaderboard.py'), run_name='__main__')
    for ext in ('.md', '.csv', '.png'): assert out.with_suffix(ext).stat().st_size > 0, ext
    df = pd.read_csv(out.with_suffix('.csv'))
    assert list(df.method) == ['simultaneous', 'baseline']
    assert abs(df.gain[0] - 0.75) < 1e-6 and abs(df.gain_std[0] - 0.3535534) < 1e-4   # diffs 0.5 and 1.0
    assert 'Command: `python bench/leaderboard.py --results' in out.with_suffix('.md').read_text()
    assert len(leaderboard(tmp_path/'stagewise.csv')) == 2
