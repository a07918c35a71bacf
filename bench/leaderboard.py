"""The leaderboard: every method of kd_fastai side by side, regenerated from the result CSVs (no training).

Reads every CSV of a known schema in `--results` (`kd_fastai.leaderboard.RESULT_SCHEMAS`; the cost and loader benchmarks
are ignored) and writes OUT.md (a table per setting, sorted by accuracy, with the sources and their protocols),
OUT.csv (one row per setting, model and method) and OUT.png (accuracy vs parameters and vs seconds per epoch).

    python bench/leaderboard.py                                   # results/*.csv -> results/leaderboard.{md,csv,png}
    python bench/leaderboard.py --results /tmp/res --out /tmp/res/leaderboard
"""
import argparse, shlex, sys
from pathlib import Path
from results_tables import leaderboard, leaderboard_markdown, plot_leaderboard


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--results', nargs='+', default=['results'], help='folders (every known CSV in them) or CSV files')
    p.add_argument('--out', default='results/leaderboard', help='writes OUT.md, OUT.csv and OUT.png')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cmd = 'python bench/leaderboard.py' + ''.join(' ' + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    df = leaderboard(args.results)
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.md').write_text(leaderboard_markdown(df, command=cmd))
    df.round(4).to_csv(out.with_suffix('.csv'), index=False)
    plot_leaderboard(df, out.with_suffix('.png'))
    print(df[['setting', 'model', 'method', 'seeds', 'acc_mean', 'gain', 'gain_std']].round(2).to_string(index=False))
    print(f"read {', '.join(df.source.unique())}; wrote {out.with_suffix('.md')}, .csv and .png")


if __name__ == '__main__': main()
