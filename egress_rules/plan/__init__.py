"""Observed state + desired RuleSet -> a minimal, idempotent plan, and its rendering."""

from egress_rules.plan.model import ConntrackFlush, Drift, DriftKind, Plan
from egress_rules.plan.planner import plan
from egress_rules.plan.render import render_plan

__all__ = ["ConntrackFlush", "Drift", "DriftKind", "Plan", "plan", "render_plan"]
