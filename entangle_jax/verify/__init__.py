"""``entangle verify``: every claim of the paper, checked in every regime, with honest verdicts.

A claim (``claims/``) states its hypothesis, measures per-pair statistics on each trained model
(``context.ModelContext``), and is judged per regime (``regimes.REGIMES``) with all seeds pooled:
bootstrap intervals (``stats``), pass rules fixed in code and verdicts HOLDS / FAILS /
NOT_APPLICABLE (``rules``). ``runner.run_verify`` drives it and ``report`` writes verify.json and
verify.md. docs/verification.md describes every check.
"""

from entangle_jax.verify.claims import CLAIMS, Claim
from entangle_jax.verify.regimes import REGIMES, Regime, VerifySettings, quick_settings
from entangle_jax.verify.report import format_table, to_markdown
from entangle_jax.verify.rules import Check, Condition, Evaluation, Hypothesis, Rule, Verdict
from entangle_jax.verify.runner import exit_status, run_verify, select_claims

__all__ = ["CLAIMS", "Check", "Claim", "Condition", "Evaluation", "Hypothesis", "REGIMES",
           "Regime", "Rule", "Verdict", "VerifySettings", "exit_status", "format_table",
           "quick_settings", "run_verify", "select_claims", "to_markdown"]
