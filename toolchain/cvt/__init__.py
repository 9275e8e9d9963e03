"""Cross-View Training (Clark et al., 2018): a light BiLSTM tagger trained semi-supervised, the
candidate of `edgec build` for tagging tasks that costs a fraction of a transformer's latency.

- :mod:`toolchain.cvt.model`: the tagger and its restricted views;
- :mod:`toolchain.cvt.data`: vocabulary, unlabelled text, batches;
- :mod:`toolchain.cvt.train`: the alternating supervised / cross-view training;
- :mod:`toolchain.cvt.export`: ONNX (float, dynamic INT8) checked against PyTorch.

Written here rather than taken from a library: the authors' code is TensorFlow 1, and no
maintained PyTorch package implements CVT's auxiliary views.
"""
