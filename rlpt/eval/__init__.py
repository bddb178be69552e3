"""Evaluation: rollouts, normalized scores, videos, plots and run reports."""

from rlpt.eval.evaluate import EvalResult, as_policy, evaluate
from rlpt.eval.plots import plot_learning_curve

__all__ = ["EvalResult", "as_policy", "evaluate", "plot_learning_curve"]
