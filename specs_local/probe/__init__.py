"""Outcome-supervised value head ("probe") on a target model's hidden states.

A linear probe reads the hidden state at the end of a reasoning step and
predicts the probability that the solution ends correct (OVM, arXiv
2311.09724). This package holds the maths only, apart from any model: the logistic fit
and its calibration (``logistic``), folds and metrics (``metrics``), the head
file (``head``) and training (``training``). Collecting features from models
happens in ``collect``, and training on a collection in ``probe_train``.

Conventions:

* ``fit_logistic`` minimises the *weighted mean* log-loss plus
  ``l2/2 * ||w||^2`` (intercept unpenalised), so an ``l2`` value means the same
  thing at any number of rows.
* Labels are 1 = the solution ended correct, 0 = wrong; ``groups`` is the
  problem id of each row. Pairs for ranking metrics are only formed inside a
  group: a search compares candidate steps of one problem, never across.
"""
from __future__ import annotations

from .head import FORMAT, SOLUTION_LOGPROB, ProbeHead, check_provenance
from .logistic import (balanced_weights, fit_logistic, fit_logistic_path, fit_platt, fit_standardizer,
                       sigmoid, standardize)
from .metrics import (balanced_log_loss, brier, grouped_folds, log_loss, pairwise_accuracy, reliability_table,
                      roc_auc)
from .training import DEFAULT_L2_GRID, DEFAULT_SCALAR_GRID, choose_l2, train_head

__all__ = ["DEFAULT_L2_GRID", "DEFAULT_SCALAR_GRID", "FORMAT", "SOLUTION_LOGPROB", "ProbeHead", "balanced_log_loss",
           "balanced_weights", "brier", "check_provenance", "choose_l2", "fit_logistic", "fit_logistic_path",
           "fit_platt", "fit_standardizer", "grouped_folds", "log_loss", "pairwise_accuracy",
           "reliability_table", "roc_auc", "sigmoid", "standardize", "train_head"]
