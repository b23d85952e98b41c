"""AgentWorkflow runs: declared, typed steps through the agent gate, and nothing else."""

from .run import StepOutcome, results_secret_data, run_steps

__all__ = ["StepOutcome", "results_secret_data", "run_steps"]
