"""The rule engine: list definitions in, memberships out; no Beam anywhere in here.

`load_definitions` validates and orders a definition document, `LeadProcessor` applies
events, timers and definition changes to a `LeadState`, the reference interpreter is the
oracle, and `explain_lead` says why.
"""

from rules.compiler import CompiledTenant, compile_definitions
from rules.definitions import (DefinitionError, Definitions, definitions_from_text,
                               load_definitions, parse_definitions)
from rules.explain import explain_lead
from rules.lead import LeadState, Profile
from rules.processor import APPLIED, DUPLICATE, STALE, LeadProcessor
from rules.reference import evaluate_tenant

__all__ = [
    "APPLIED", "DUPLICATE", "STALE", "CompiledTenant", "DefinitionError", "Definitions",
    "LeadProcessor", "LeadState", "Profile", "compile_definitions", "definitions_from_text",
    "evaluate_tenant",
    "explain_lead", "load_definitions", "parse_definitions",
]
