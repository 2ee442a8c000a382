"""`hub:NAME[:split]`: a Hugging Face Hub dataset through `datasets.load_dataset`."""

from __future__ import annotations

from dataprep.errors import DataprepError, first_line
from dataprep.sources.tables import dataset_to_frame


def read_hub(spec: str, split: str | None):
    """`NAME[:split]` through datasets.load_dataset; then the same path as a save_to_disk directory."""
    import datasets

    name, _, spec_split = spec.partition(":")
    split = spec_split or split
    if not name:
        raise DataprepError("hub: needs a dataset id, e.g. hub:tatsu-lab/alpaca:train")
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, missing split: all one line for the user
        raise DataprepError(
            f"cannot load Hub dataset {name}: {first_line(exc)}; check the id and network "
            "(HF_HUB_OFFLINE=1 allows only cached datasets), or save it locally and pass the directory"
        ) from None
    return dataset_to_frame(ds, f"hub:{name}", split)
