"""bench/mlkd_terms.py's gradient measurement: zero for a student that matches its teacher, and MLKD's class-level
term grows against the instance term with the batch size (what the script reports on Fashion-MNIST)."""
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parents[1]/'bench'))
import mlkd_terms as mt


def test_term_grads_zero_when_matched():
    torch.manual_seed(0)
    t = torch.randn(64, 10) * 3
    g = mt.term_grads(t.clone(), t, t.argmax(1))
    assert set(g) == {'CE', 'instance', 'batch', 'class'}
    assert g['CE'] > 0 and max(g['instance'], g['batch'], g['class']) < 1e-6


def test_class_term_grows_with_batch():
    torch.manual_seed(0)
    t, s = torch.randn(128, 10) * 3, torch.randn(128, 10)
    y = t.argmax(1)
    small, big = mt.term_grads(s[:32], t[:32], y[:32]), mt.term_grads(s, t, y)
    assert big['class'] / big['instance'] > 2 * small['class'] / small['instance']
