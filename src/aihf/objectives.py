"""The loss terms of the AIHF objective (docs/design.md §1), shared by every domain.

Pure functions of tensors. Each returns a quantity to *minimise*; the sign conventions are those of
docs/design.md §1 with the upper-level objective L(θ) negated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTINGS = ("mean", "sum")


def bradley_terry_loss(return_first: torch.Tensor, return_second: torch.Tensor,
                       label: torch.Tensor) -> torch.Tensor:
    """Negative Bradley–Terry log-likelihood, averaged over pairs.

    `label` is P(first ≻ second) as given by the teacher: 1, 0, or 0.5 for "equal". With label 1 this is
    −E_P[log σ(R(τ_w) − R(τ_l))], whose gradient is −E_P[(1 − σ(Δ)) (∇R(τ_w) − ∇R(τ_l))].
    """
    margin = return_first - return_second
    label = label.to(margin.dtype)
    return -(label * F.logsigmoid(margin) + (1 - label) * F.logsigmoid(-margin)).mean()


def demonstration_contrast_loss(reward_demo: torch.Tensor, reward_policy: torch.Tensor,
                                beta: float = 1.0) -> torch.Tensor:
    """Maximum-likelihood IRL term: −(1/β)(E_D[r] − E_π[r]).

    Its gradient is −(1/β)(E_D[∇r] − E_π[∇r]): raise the reward of what the expert did, lower the reward of
    what the current policy does. Inputs are per-sample rewards or returns (any shape; each side averaged).
    """
    return -(reward_demo.mean() - reward_policy.mean()) / beta


def logistic_demonstration_loss(reward_demo: torch.Tensor, reward_policy: torch.Tensor) -> torch.Tensor:
    """The LLM variant of the demonstration term: demonstration ≻ policy sample, as a BT pair."""
    return bradley_terry_loss(reward_demo, reward_policy, torch.ones_like(reward_demo))


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (sigmoid) or IPO loss on the implicit reward β·log π/π_ref, averaged over pairs."""
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * logits)
                  - label_smoothing * F.logsigmoid(-beta * logits))
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected 'sigmoid' or 'ipo'")
    return losses.mean()


def nll_loss(logps: torch.Tensor, num_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of demonstrations (behaviour cloning / SFT), per token if counts are given."""
    if num_tokens is None:
        return -logps.mean()
    return -(logps.sum() / num_tokens.sum().clamp(min=1))


def weighted_objective(demo_loss: torch.Tensor | None, pref_loss: torch.Tensor | None,
                       demo_weight: float, pref_weight: float, weighting: str = "mean",
                       num_demos: int = 1, num_prefs: int = 1) -> torch.Tensor:
    """λ_D·demo_loss + λ_P·pref_loss under a weighting mode (docs/objective.md derives both).

    Each loss is a batch mean of one source's negative log-likelihood terms, and `num_demos` / `num_prefs` count
    those terms in the whole training data: a demonstration *transition* in MuJoCo (the demonstration contrast is
    a per-transition mean, and a trajectory's log-likelihood is the sum over its steps), a demonstration
    *response* in the LLM domain (its sequence log-likelihood, or one logistic term), and one *pair* for
    preferences.

    - ``mean``: each source's average loss times its λ (each source counts the same however much data it has).
    - ``sum``: the log-likelihood summed over all the data, λ_D·N_D·demo_loss + λ_P·N_P·pref_loss, divided by
      N_D + N_P (a constant: it changes the step size, not the optimum) so that steps do not grow with the data.
      This is the weighting docs/design.md §1 reports as the more reliable one.
    A term whose weight is 0 is skipped entirely (it may then be None).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
    if weighting == "sum":
        total = max(num_demos * (demo_weight != 0) + num_prefs * (pref_weight != 0), 1)
        demo_weight = demo_weight * num_demos / total
        pref_weight = pref_weight * num_prefs / total
    loss = None
    for weight, term in ((demo_weight, demo_loss), (pref_weight, pref_loss)):
        if weight == 0:
            continue
        if term is None:
            raise ValueError("a loss term with a non-zero weight is missing")
        loss = weight * term if loss is None else loss + weight * term
    if loss is None:
        raise ValueError("both demo_weight and pref_weight are 0: there is nothing to learn the reward from")
    return loss
