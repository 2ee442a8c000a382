"""The training stage: reads tokenize's Arrow shards and trains (QLoRA SFT, multi-label classification).

Imports nothing from polars; heavy libraries load inside the functions that need them.
"""
