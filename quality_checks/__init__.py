"""Quality gate: per-sample metrics, Great Expectations suites, quarantine, dataset cards.

See docs/quality.md. Great Expectations and synthesis are imported lazily,
so importing this package stays cheap.
"""

from quality_checks.card import write_dataset_card
from quality_checks.gate import (
    FailedExpectation,
    GateReport,
    ShardResult,
    gate_build,
    validate_path,
)
from quality_checks.metrics import METRICS_SCHEMA, MetricsStage, validation_table
from quality_checks.suites import FAMILIES, SUITE_VERSIONS, Tolerances

__all__ = [
    "FAMILIES",
    "METRICS_SCHEMA",
    "SUITE_VERSIONS",
    "FailedExpectation",
    "GateReport",
    "MetricsStage",
    "ShardResult",
    "Tolerances",
    "gate_build",
    "validate_path",
    "validation_table",
    "write_dataset_card",
]
