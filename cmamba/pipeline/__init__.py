"""The extraction pipeline: from a folder (or a benchmark corpus) of media to a feature cache.

``layout`` turns folders and label files into validated clip lists, ``clip`` runs every registered extractor
on one clip (decode, extract, validate, align — absence and error records, never zeros), ``run`` is the Dask
graph (clip × modality tasks, shard writers, the manifest) and ``cache`` stores it. The pipeline may import the
extractors, ``cmamba.assets``, ``cmamba.constants``, ``cmamba.errors`` and ``cmamba.io``; never the fusion model,
the datasets, the app layer or the CLI.
"""
