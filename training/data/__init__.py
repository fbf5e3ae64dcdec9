"""The training data layer: real and generated speech corpora, windows, sampling, augmentation, features.

Modules: `paths` (where the data lives), `manifest` (the CSV format and `Clip`), `dataset` (clip selection,
speaker splits, fixed-length windows, the torch `WindowDataset`), `sampler` (N words x M takes batches),
`augment` (noise, reverberation, gain, shift, background speech), `features` (cached MFCC windows and
feature statistics), `cli` (`data stats`). Nothing here ever hands out `gsc_v2_test` or the ten command words.
"""
