"""The leaderboard: reads the result CSVs that the benchmarks of `bench/` write and puts every method side by side.

This reads this repository's result files, so it lives with the benchmarks, not in the package;
`nbs/62_leaderboard.ipynb` explains and tests it. `python bench/leaderboard.py` regenerates
results/leaderboard.{md,csv,png}.
"""
from __future__ import annotations
import json, re, warnings
from fnmatch import fnmatch
from pathlib import Path
import numpy as np
import pandas as pd
from kd_fastai.experiments.runs import to_markdown

_ALIASES = {'no teacher': 'baseline', 'kd from the teacher': 'KD'}  # lower-case short name -> leaderboard name

def method_names(labels, groups=None)->list:
    "`method_name` of each label, except labels that would share a name with another label of their group"
    labels, groups = list(map(str, labels)), list(groups) if groups is not None else [None] * len(labels)
    seen = {}
    for g, l in zip(groups, labels): seen.setdefault((g, method_name(l)), set()).add(l)
    return [method_name(l) if len(seen[g, method_name(l)]) == 1 else l for g, l in zip(groups, labels)]

def method_name(label)->str:
    "Short method name: text in parentheses and commas dropped, 'no teacher' -> 'baseline'"
    s = re.sub(r'\s*\([^()]*\)', '', str(label)).replace(',', '').strip()
    return _ALIASES.get(s.lower(), s)

_COLS = ['setting', 'teacher', 'model', 'method', 'seeds', 'acc_mean', 'acc_std', 'per_seed', 'params', 'sec_per_epoch']

def _summarize(runs:pd.DataFrame)->pd.DataFrame:
    "One row per (setting, teacher, model, method) from one row per run (columns `seed`, `acc` in %, `sec` per epoch)"
    rows = []
    for (st, te, mo, me), g in runs.groupby(['setting', 'teacher', 'model', 'method'], sort=False):
        rows.append(dict(setting=st, teacher=te, model=mo, method=me, seeds=len(g), acc_mean=g.acc.mean(),
                         acc_std=g.acc.std(ddof=1), per_seed=dict(zip(g.seed.astype(int), g.acc.astype(float))),
                         params=g.params.iloc[0], sec_per_epoch=g.sec.mean()))
    return pd.DataFrame(rows, columns=_COLS)

def _teacher(df, default=''):
    "The model of the table's teacher row (method 'teacher ...'), or `default`"
    t = df.model[df.method.astype(str).str.startswith('teacher')]
    return t.iloc[0] if len(t) else default

def _main_job_seeds(df, path):
    "Per-seed accuracies (%) of each row from the main job's `TAG_runs.json` beside `TAG_results.csv`, or None"
    f = Path(str(path).replace('_results.csv', '_runs.json')) if str(path).endswith('_results.csv') else None
    if f is None or not f.exists(): return None
    seeds = {}
    for r in json.loads(f.read_text()):
        seeds.setdefault((r['model'], r['method']), {})[int(r['seed'])] = float(r['accuracy']) * 100
    return [seeds.get(k) for k in zip(df.model, df.method)]

def read_kd_results(df, name, path=None):
    "Summary rows of the main job's `kd_results.csv` (per-seed accuracies from `kd_runs.json` beside it, if there)"
    return pd.DataFrame(dict(setting=name, teacher=_teacher(df), model=df.model, method=df.method.map(method_name),
                             seeds=df.seeds, acc_mean=df.acc_mean, acc_std=df.acc_std,
                             per_seed=_main_job_seeds(df, path), params=df.params, sec_per_epoch=df['sec/epoch']),
                        columns=_COLS)

def read_selfkd(df, name, path=None):
    "Summary rows of `bench/selfkd.py` with their per-seed accuracies ('a / b / c', seeds 0..n-1)"
    out = read_kd_results(df, name, path).assign(teacher='self')
    out['per_seed'] = [dict(enumerate(float(v) for v in str(s).split('/'))) for s in df['per seed (%)']]
    return out

STAGEWISE_TEACHER = 'resnet34'  # bench/stagewise.py's teacher (width 8, stem stride 2)

def read_stagewise(df, name, path=None):
    "Per-seed rows of `bench/stagewise.py`, one setting per data fraction"
    runs = pd.DataFrame(dict(setting=[f"{name} ({d} data)" for d in df.data], teacher=STAGEWISE_TEACHER, model=df.model,
                             method=df.method.map(method_name), seed=df.seed, acc=df.accuracy * 100, params=df.params,
                             sec=df.seconds / df.epochs))
    return _summarize(runs)

def _epochs(df, path):
    "Epochs of a run: the `epochs` column, or `--epochs N` in the command of the .md beside the CSV, or NaN"
    if 'epochs' in df: return df.epochs
    md = Path(path).with_suffix('.md') if path is not None else None
    m = re.search(r'--epochs[ =](\d+)', md.read_text()) if md is not None and md.exists() else None
    return float(m.group(1)) if m else np.nan

def read_takd_rco(df, name, path=None):
    "Summary rows of `bench/takd_rco.py` (`sec/run` divided by the epochs of a run)"
    col = 'test accuracy (%)'
    text = df[col].astype(str).str.split('±').str[0].str.strip() if col in df else np.nan
    acc = df.test_mean.fillna(pd.to_numeric(text, errors='coerce'))
    return pd.DataFrame(dict(setting=name, teacher=_teacher(df), model=df.model, method=df.method.map(method_name),
                             seeds=df.seeds, acc_mean=acc, acc_std=df.test_std, per_seed=None, params=df.params,
                             sec_per_epoch=df['sec/run'] / _epochs(df, path)), columns=_COLS)

def read_method_seeds(df, name, path=None):
    "Per-seed rows of the method benchmarks (`bench/logit_methods.py` and the same schema), one setting per pair"
    runs = pd.DataFrame(dict(setting=[f"{name} ({p})" for p in df.pair],
                             teacher=[str(p).split(':')[0] for p in df.pair], model=df.model,
                             method=method_names(df.method, df.pair.astype(str) + ' ' + df.model.astype(str)),
                             seed=df.seed, acc=df.test_acc * 100, params=df.params, sec=df.sec_per_epoch))
    return _summarize(runs)

PROTOCOL_FINAL_TEST = 'accuracy of the final epoch on the test set'
PROTOCOL_BEST_LOSS = 'best epoch by held-out loss (held-out training images), then the test set'
PROTOCOL_BEST_ACC = 'best epoch by held-out accuracy (held-out training images), then the test set'
RESULT_SCHEMAS = {  # name: (columns it needs, reader, protocol)
    'kd_results': (('model', 'method', 'seeds', 'params', 'acc_mean', 'acc_std', 'sec/epoch'),
                   read_kd_results, PROTOCOL_FINAL_TEST),
    'selfkd': (('model', 'method', 'seeds', 'params', 'acc_mean', 'acc_std', 'sec/epoch', 'per seed (%)'),
               read_selfkd, PROTOCOL_FINAL_TEST),
    'stagewise': (('data', 'model', 'method', 'seed', 'params', 'epochs', 'accuracy', 'seconds'),
                  read_stagewise, PROTOCOL_FINAL_TEST),
    'takd_rco': (('model', 'method', 'seeds', 'params', 'test_mean', 'test_std', 'sec/run'),
                 read_takd_rco, PROTOCOL_BEST_LOSS),
    'method_seeds': (('pair', 'model', 'method', 'seed', 'params', 'test_acc', 'sec_per_epoch'),
                     read_method_seeds, PROTOCOL_BEST_ACC),
}
# cost benchmarks and our own output; diagnostics of the teachers' targets and of MLKD's loss terms; the progress file
# of an unfinished run (`bench/stagewise.py`): never ranked
IGNORED_RESULTS = ('loaders*', 'teacher_cache*', 'logit_cost*', 'kd_epoch*', 'leaderboard*',
                   'logit_diagnostics*', 'mlkd_terms*', '*.partial.csv')

def schema_of(df:pd.DataFrame, what='table')->str:
    "Name of the schema whose columns `df` has (the one needing most columns), or a ValueError listing the known ones"
    fits = [n for n, (cols, *_) in RESULT_SCHEMAS.items() if set(cols) <= set(df.columns)]
    if fits: return max(fits, key=lambda n: len(RESULT_SCHEMAS[n][0]))
    known = '; '.join(f"{n} ({', '.join(c)})" for n, (c, *_) in RESULT_SCHEMAS.items())
    raise ValueError(f"Unknown result schema for {what} (columns: {', '.join(map(str, df.columns))}). "
                     f"Known schemas: {known}")

def read_result(src, # a CSV file or a DataFrame of one of `RESULT_SCHEMAS`
                name:str|None=None, # setting name (default: the file's stem, or the schema's name for a DataFrame)
               )->pd.DataFrame:
    "One result table in the leaderboard's form, read by the schema of its columns, with its source and protocol"
    path = None if isinstance(src, pd.DataFrame) else Path(src)
    df = src if path is None else pd.read_csv(path)
    schema = schema_of(df, path or 'the DataFrame')
    _, reader, protocol = RESULT_SCHEMAS[schema]
    name = name or (path.stem if path else schema)
    return reader(df, name, path).assign(source=path.name if path else name, protocol=protocol)

def result_files(folder, ignore=IGNORED_RESULTS)->list:
    "The CSVs of `folder` that `read_result` knows (sorted), without the `ignore` patterns; a warning for unknown ones"
    out = []
    for f in sorted(Path(folder).glob('*.csv')):
        if any(fnmatch(f.name, p) for p in ignore): continue
        try: schema_of(pd.read_csv(f, nrows=5), f)
        except ValueError as e: warnings.warn(f"{e} -- skipped"); continue
        out.append(f)
    return out

def paired_gain(row, # a leaderboard row (dict or Series) with `per_seed` and `acc_mean`
                base, # the baseline's row
               )->tuple:
    "(gain, std) in points: mean and sample std of the per-seed differences, else (difference of means, NaN)"
    a, b = row['per_seed'], base['per_seed']
    common = sorted(set(a) & set(b)) if isinstance(a, dict) and isinstance(b, dict) else []
    if not common: return float(row['acc_mean'] - base['acc_mean']), np.nan
    d = np.array([a[s] - b[s] for s in common])
    return float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else np.nan

def leaderboard(paths_or_frames, # a folder, CSV file or DataFrame, a list of them, or a dict {setting: file or frame}
                baseline:str='baseline', # the method the gains are measured against
               )->pd.DataFrame:
    "One row per (setting, model, method): accuracy, paired gain over the baseline, params, sec/epoch, source"
    src = paths_or_frames
    if isinstance(src, dict): items = list(src.items())
    else: items = [(None, s) for s in (src if isinstance(src, (list, tuple)) else [src])]
    parts = []
    for name, s in items:
        if not isinstance(s, pd.DataFrame) and Path(s).is_dir(): parts += [read_result(f) for f in result_files(s)]
        else: parts.append(read_result(s, name))
    if not parts: raise ValueError(f"No result table found in {paths_or_frames}")
    df = pd.concat(parts, ignore_index=True)
    df.loc[df.seeds == 1, 'acc_std'] = np.nan
    bases = {(r.setting, r.model): r for _, r in df[df.method == baseline].iterrows()}
    gains = [paired_gain(r, bases[r.setting, r.model]) if (r.setting, r.model) in bases else (np.nan, np.nan)
             for _, r in df.iterrows()]
    df['gain'], df['gain_std'] = [g for g, _ in gains], [s for _, s in gains]
    df['per_seed'] = [' / '.join(f"{v[k]:.2f}" for k in sorted(v)) if isinstance(v, dict) else '' for v in df.per_seed]
    first = {k: i for i, k in enumerate(dict.fromkeys(zip(df.setting, df.model)))}  # settings, then models, as read
    df = df.assign(_o=[first[k] for k in zip(df.setting, df.model)])
    df = df.sort_values(['_o', 'acc_mean'], ascending=[True, False], kind='stable')
    cols = ['setting', 'teacher', 'model', 'method', 'seeds', 'acc_mean', 'acc_std', 'gain', 'gain_std', 'params',
            'sec_per_epoch', 'per_seed', 'source', 'protocol']
    return df[cols].reset_index(drop=True)

def _pm(m, s, fmt='.2f'):
    "'m ± s', or 'm' without a std, or '' without a value"
    if pd.isna(m): return ''
    return f"{m:{fmt}}" if pd.isna(s) else f"{m:{fmt}} ± {s:.2f}"

def leaderboard_markdown(df:pd.DataFrame, # from `leaderboard`
                         command:str|None=None, # the command that wrote it
                        )->str:
    "The leaderboard as markdown: a table per setting (by model, then accuracy), then the sources and their protocols"
    out = ['# Leaderboard: every method of kd_fastai side by side', '']
    if command: out += [f'Command: `{command}`', '']
    out += ["Regenerated from the result CSVs listed at the end; nothing typed by hand. Accuracy: test set, "
            "mean ± sample std over seeds (%). Gain: points over the baseline (the student trained alone) of the same "
            "setting and model; its ± is the std of the per-seed differences, paired by seed, where the file has "
            "per-seed numbers. sec/epoch: training time of one epoch on the machine (and load) of that file: "
            "compare within a setting.", '']
    for st, g in df.groupby('setting', sort=False):
        out += [f'## {st}', '',
                f"Teacher: {g.teacher.iloc[0] or '-'}. Source: `{g.source.iloc[0]}` ({g.protocol.iloc[0]}).", '']
        t = pd.DataFrame({'model': g.model, 'method': g.method, 'seeds': g.seeds,
                          'accuracy (%)': [_pm(m, s) for m, s in zip(g.acc_mean, g.acc_std)],
                          'gain (pts)': [_pm(m, s, '+.2f') for m, s in zip(g.gain, g.gain_std)],
                          'params': [f"{int(p):,}" if pd.notna(p) else '' for p in g.params],
                          'sec/epoch': [f"{s:.2f}" if pd.notna(s) else '' for s in g.sec_per_epoch]})
        out += [to_markdown(t), '']
    src = df.drop_duplicates('source')
    out += ['## Sources', ''] + [f"- `{s}`: {p}" for s, p in zip(src.source, src.protocol)]
    if src.protocol.nunique() > 1:
        out += ['', '**The protocols differ between files** (see above): '
                'compare gains within a setting, not accuracies across files.']
    return '\n'.join(out) + '\n'

_MARKERS = 'osD^v<>pPXhH8d'  # one per method (then the same ones hollow); the teacher is '*'

def _short(v, pos=None)->str:
    "Axis label of a number: 0.5, 20, 50k, 2M"
    for d, u in ((1e6, 'M'), (1e3, 'k')):
        if v >= d: return f"{v / d:g}{u}"
    return f"{v:g}"

def plot_leaderboard(df:pd.DataFrame, # from `leaderboard`
                     fname=None, # save the figure there (PNG) when given
                     title:str='kd_fastai leaderboard'):
    "Two panels: accuracy vs parameters and vs seconds per training epoch (log); colour = setting, marker = method"
    import matplotlib
    if fname is not None: matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, FuncFormatter, NullFormatter
    settings, methods = list(dict.fromkeys(df.setting)), [m for m in dict.fromkeys(df.method) if m != 'teacher']
    cmap = plt.get_cmap('tab10' if len(settings) <= 10 else 'tab20')
    color = {s: cmap(i % cmap.N) for i, s in enumerate(settings)}
    style = {m: dict(marker=_MARKERS[i % len(_MARKERS)], fillstyle='full' if i < len(_MARKERS) else 'none')
             for i, m in enumerate(methods)}
    style['teacher'] = dict(marker='*', markersize=13, markeredgecolor='k')
    fig, axs = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, x, label in zip(axs, ('params', 'sec_per_epoch'), ('parameters', 'seconds per training epoch')):
        for _, r in df[df[x].notna() & df.acc_mean.notna()].iterrows():
            ax.errorbar(r[x], r.acc_mean, yerr=None if pd.isna(r.acc_std) else r.acc_std, color=color[r.setting],
                        linestyle='none', capsize=2, **{'markersize': 7, **style[r.method]})
        ax.set_xscale('log'); ax.set_xlabel(f'{label} (log scale)'); ax.grid(alpha=.3, which='both')
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5))); ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(_short))
    axs[0].set_ylabel('test accuracy (%)')
    hs = [Line2D([], [], color=c, marker='s', linestyle='none', label=s) for s, c in color.items()]
    hm = [Line2D([], [], color='0.3', linestyle='none', label=m, **style[m])
          for m in ['teacher'] * ('teacher' in set(df.method)) + methods]
    fig.legend(handles=hs, title='setting (colour)', loc='upper left', bbox_to_anchor=(1.0, 0.98), fontsize=8)
    fig.legend(handles=hm, title='method (marker)', loc='lower left', bbox_to_anchor=(1.0, 0.02), fontsize=8, ncol=2)
    fig.suptitle(title); fig.tight_layout()
    if fname is not None: fig.savefig(fname, dpi=100, bbox_inches='tight'); plt.close(fig)
    return fig
