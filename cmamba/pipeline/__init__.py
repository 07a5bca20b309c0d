"""Extraction pipeline: a Dask graph writing Parquet shards (not built yet; see issue #5)."""
