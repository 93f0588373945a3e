"""Costs: pricing rules, the ledger, the makespan schedule, memory, dry runs, the plan search."""
