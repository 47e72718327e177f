"""Discovery: one validated :class:`DiscoveryRequest`, the method's scores turned into the
circuit graph, its faithfulness, its reference, and the report."""

from __future__ import annotations

from circuitx.discovery.faithfulness import (
    CURVE_FRACTIONS,
    EdgeRanking,
    edge_ranking,
    faithfulness_report,
)
from circuitx.discovery.references import (
    reference_for_graph,
    reference_for_model,
    resolve_reference,
)
from circuitx.discovery.report import (
    evaluate,
    faithless_match,
    matching_reference,
    overlap_notes,
    report,
    run_warnings,
    saved_graph_notes,
    scoring_notes,
    top_k_notes,
)
from circuitx.discovery.request import FAITHFULNESS_PROMPTS, DiscoveryRequest, check_reference
from circuitx.discovery.run import discover, model_id, select
from circuitx.discovery.scored import Scored, discover_scored

__all__ = [
    "CURVE_FRACTIONS",
    "DiscoveryRequest",
    "EdgeRanking",
    "FAITHFULNESS_PROMPTS",
    "Scored",
    "check_reference",
    "discover",
    "discover_scored",
    "edge_ranking",
    "evaluate",
    "faithless_match",
    "faithfulness_report",
    "matching_reference",
    "model_id",
    "overlap_notes",
    "reference_for_graph",
    "reference_for_model",
    "report",
    "resolve_reference",
    "run_warnings",
    "saved_graph_notes",
    "scoring_notes",
    "select",
    "top_k_notes",
]
