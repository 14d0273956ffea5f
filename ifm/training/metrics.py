"""Evaluation metrics: MAE and RMSE for regression, AUC and log loss for CTR.

Regression predictions are bounded to the label range before scoring when asked,
as the NFM code (which the IFM authors build on) does: with labels -1/+1 a
prediction of 1.4 is scored as 1. The run config keeps the choice (bound_predictions).
"""
import torch


def bound(pred: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return pred.clamp(min=low, max=high)


def mae(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred - y).abs().mean().item()


def rmse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred - y).square().mean().sqrt().item()


def logloss(logit: torch.Tensor, y: torch.Tensor) -> float:
    return torch.nn.functional.binary_cross_entropy_with_logits(logit.double(), y.double()).item()


def auc(score: torch.Tensor, y: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum statistic, with ties given their average rank."""
    score, y = score.double().flatten(), y.double().flatten()
    positives = y.sum().item()
    negatives = y.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = torch.argsort(score)
    sorted_scores = score[order]
    ranks = torch.empty_like(score)
    ranks[order] = torch.arange(1, score.numel() + 1, dtype=torch.float64)
    # Average the ranks inside each group of tied scores.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return ((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)).item()


def evaluate(output: torch.Tensor, y: torch.Tensor, task: str, label_range=None) -> dict:
    """All metrics of a task for model outputs (predictions, or logits for 'binary')."""
    output, y = output.detach().float().cpu(), y.float().cpu()
    if task == "binary":
        return {"auc": auc(output, y), "logloss": logloss(output, y)}
    if label_range is not None:
        output = bound(output, *label_range)
    return {"rmse": rmse(output, y), "mae": mae(output, y)}


# The metric that early stopping watches, per task (lower is better for both).
MONITOR = {"regression": "rmse", "binary": "logloss"}
