"""Training data: ``memory`` (an in-memory ``FeatureDataset``; ``collate`` lives in ``cmamba.fusion.batch``),
``shards`` (``ShardDataset``, the streaming reader over a feature cache), ``view`` (``training_view``: a split
materialised once into memory-mapped arrays, what ``train`` reads), ``synthetic`` (benchmark tasks with known
answers and synthetic caches), ``media`` (real talking-face clips muxed from public recordings, for tests,
benchmarks and the demo) and ``mmsa`` (MMSA / MulT pickles in and out). May import torch, the pipeline's cache,
the extractors' alignment, the fusion stage and the shared modules; never the app layer or the CLI.
"""
