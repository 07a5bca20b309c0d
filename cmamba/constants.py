"""Names shared across layers, defined once: modalities, alignment modes, splits, benchmark datasets, tasks.

The CLI's ``choices`` and every validation message come from here. No imports, so any module may use it.
"""

MODALITIES = ("text", "audio", "video")  # the pipeline's modalities, in shard-column order
ALIGN_MODES = ("native", "word", "clock")  # see cmamba.extractors.align
SPLITS = ("train", "valid", "test")
DATASETS = ("mosi", "mosei", "sims", "simsv2")  # CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2 (metric conventions)
TASKS = ("regression", "classification")
CLIP_ID_SEPARATOR = "$_$"  # MMSA's clip id: <video_id>$_$<clip_id>
SEGMENT_MODES = ("auto", "transcript", "asr", "vad", "fixed", "none")  # how long recordings are cut
VIEW_DTYPES = ("float32", "float16")  # how a training view stores features (cmamba.datasets.view)
EXPORT_FORMATS = ("mmsa", "mult")  # MMSA's feature pickle; MulT / MultiBench's left-padded layout
