"""Evaluation: the paper's user-defined keyword protocol on `gsc_v2_test` and a validation protocol.

Modules: `metrics` (EER, FRR at FAR, closed- and open-set accuracy, macro F1), `protocol` (k-shot enrollment
draws, `evaluate`, `evaluate_groups` for validation on training corpora), `embedders` (float checkpoint, int8
TFLite), `dtw` (the MFCC + DTW baseline scorer), `plots` (DET curve and score histograms), `cli` (`kws-eval`).
Only this package reads `gsc_v2_test`.
"""
