"""The fusion stage: the Coupled Mamba model and everything that trains and evaluates it.

Three layers, as in mamba-ssm: ``ops`` (the coupled scan kernels and their reference; no model), ``layers``
(the SSM initialisation, projection, resampling, the Coupled Mamba layer, crossmodal attention) and the model
(``config`` — FusionConfig and TrainConfig, plain dataclasses —, ``model``, ``batch`` — the batch format and
``collate``), with ``checkpoint`` (safetensors + JSON), ``train`` (train / evaluate / predict, DDP) and
``metrics`` (MMSA's metrics). Modules here import torch, ``cmamba.constants``, ``cmamba.errors`` and
``cmamba.io``; never the extractors, the pipeline, the datasets, the app layer or the CLI. This ``__init__``
imports nothing, so reading a config does not load torch.
"""
