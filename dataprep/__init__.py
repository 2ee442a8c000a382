"""dataprep: dataset preparation and curation for fine-tuning open LLMs."""

__version__ = "0.1.0"
