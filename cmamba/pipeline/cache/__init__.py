"""A feature cache on disk: ``schema`` (the Parquet shard columns and how rows become sequences), ``store`` (atomic
shards, the errors table, ``manifest.json``, the cache lock) and ``parts`` (the resumable per clip × modality
results). Storage only: no extraction, no scheduling; imports pyarrow, numpy, the extractors' sequence type, the
result type of ``pipeline.clip`` and the shared modules.
"""
