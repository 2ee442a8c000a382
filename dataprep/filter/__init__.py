"""`dataprep filter`: length, language, PII and quality filters (see dataprep.filter.stage)."""

from dataprep.filter.config import FilterConfig
from dataprep.filter.language import language_filter
from dataprep.filter.length import length_filter
from dataprep.filter.pii import find_pii, pii_filter, redact
from dataprep.filter.quality import quality_filter
from dataprep.filter.stage import apply_filters, filter  # noqa: A004

__all__ = ["FilterConfig", "apply_filters", "filter", "find_pii", "language_filter", "length_filter", "pii_filter",
           "quality_filter", "redact"]
