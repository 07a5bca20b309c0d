"""cmamba: raw multimodal sentiment analysis with a Coupled Mamba fusion model."""

__version__ = "0.1.0"
