"""The open CTR benchmark's training protocol (BARS, whose runs FuxiCTR makes), where it differs
from the paper's recipes. A TrainConfig with a non-empty `protocol` dict trains this way:

- the loss is the batch's mean log loss plus lambda_e/2 ||E||^2 over the embedding tables (w and v)
  and lambda_n/2 ||W||^2 over every other weight and bias, w0 included (FuxiCTR's
  embedding_regularizer on nn.Embedding and net_regularizer on the rest, p = 2), in the step;                          rank_model.py:67-84, 90-92
- the gradient's norm is clipped at 10;                                       rank_model.py:140-141, 201
- the validation AUC is monitored (higher is better); an epoch improves when it beats the best by
  more than 1e-6; after an epoch that does not, the learning rate is cut tenfold (not below 1e-6),
  and training stops after 2 such epochs in a row;                            rank_model.py:36-43, 134-138, 167-184
- the best epoch's weights are kept;                                          rank_model.py:164-165
- the model starts from FuxiCTR's initialisation (`init: fuxictr`): every feature table (w_i and
  v_i) ~ N(0, 1e-4) and every linear layer Xavier-normal with zero bias.    base_model.py:44, 96-118
  Our models' own starts (v_i ~ N(0, 0.01), as the IFM and NFM code) made AFM learn far slower
  than BARS's: validation AUC 0.925 against 0.934 at epoch 6; from this start it follows BARS's
  log (AFM_frappe_x1_011_2d591f68.log) to within 0.003 at every epoch 1-6.
(reczoo/FuxiCTR fuxictr/pytorch/models/rank_model.py at e0d5495; base_model.py at 31ebe17.) BARS's Frappe_x1 runs used FuxiCTR
1.1.0, whose logs show the same rule: reczoo/BARS ranking/ctr/DeepFM/DeepFM_frappe_x1/README.md (1ffaf73)
cuts the rate to 1e-4 after epoch 8 (AUC 0.980844 < 0.981040), gains again, and stops at epoch 15
after epochs 14 and 15 gain nothing, keeping epoch 13. Adam, learning rate 1e-3, batch 4096 and
embedding 10 are `ifm.training.recipes`' `bars` recipe.
"""
from __future__ import annotations

import math

import torch

FUXICTR = "reczoo/FuxiCTR fuxictr/pytorch/models/rank_model.py@e0d5495"
DEFAULTS = {"monitor": "auc", "min_delta": 1e-6, "plateau_factor": 0.1, "min_lr": 1e-6, "clip_norm": 10.0,
            "l2_embedding": 0.0, "l2_net": 0.0, "init": "model"}
INITS = ("model", "fuxictr")      # each model's own start, or FuxiCTR's for all
HIGHER_IS_BETTER = {"auc"}


def settings(protocol: dict) -> dict:
    unknown = set(protocol) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown protocol setting(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    if protocol.get("init", "model") not in INITS:
        raise ValueError(f"unknown protocol init {protocol['init']!r}; choose {' or '.join(INITS)}")
    return {**DEFAULTS, **protocol}


def check_task(task: str, dataset: str) -> None:
    """The protocol trains on log loss and chooses on AUC: click data (labels 0/1) only."""
    if task != "binary":
        raise ValueError(f"recipe bars (the open CTR benchmark's protocol: log loss, validation AUC) needs click "
                         f"data with labels 0/1; {dataset} is a {task} task (use recipe paper or code)")


def initialise(model, protocol: dict) -> None:
    """Under `init: fuxictr`, FuxiCTR's start (BaseModel.reset_parameters): the feature tables
    (nn.Embedding there, FeatureTable here: w_i and v_i) ~ N(0, 1e-4), every nn.Linear
    Xavier-normal with its bias at 0. w0 starts at 0 in both (LR_Layer's bias); batch norm keeps
    torch's start. Under `init: model` the model keeps its own."""
    if settings(protocol)["init"] == "model":
        return
    from ifm.models.layers import FeatureTable

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FeatureTable):
                torch.nn.init.normal_(module.weight, std=1e-4)
            elif isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()


def sign(monitor: str) -> float:
    """+1 where lower is better (log loss, RMSE), -1 where higher is (AUC): sign * value is minimised."""
    return -1.0 if monitor in HIGHER_IS_BETTER else 1.0


def regularization(model, protocol: dict) -> torch.Tensor:
    """lambda_e/2 sum ||E||^2 over the feature tables (w_i and v_i) + lambda_n/2 sum ||W||^2 over the
    rest of the trainable parameters, weights and biases alike."""
    p = settings(protocol)
    from ifm.models.layers import FeatureTable

    tables = {id(m.weight) for m in model.modules() if isinstance(m, FeatureTable)}     # w0 is a net bias
    total = torch.zeros((), device=next(model.parameters()).device)
    for param in model.parameters():
        lam = p["l2_embedding"] if id(param) in tables else p["l2_net"]
        if lam and param.requires_grad:
            total = total + lam / 2 * param.square().sum()
    return total


def step(model, optimizer, x: torch.Tensor, y: torch.Tensor, protocol: dict) -> torch.Tensor:
    """One step: mean log loss + regularization, gradient norm clipped; returns the summed log loss
    of the batch (as the paper's step does, for the epoch's running loss)."""
    p = settings(protocol)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y, reduction="mean")
    optimizer.zero_grad(set_to_none=True)
    (bce + regularization(model, protocol)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), p["clip_norm"])
    optimizer.step()
    return bce.detach() * len(y)


def improved(values: list[float], protocol: dict) -> bool:
    """Whether the last of the minimised validation values beats every earlier one by more than
    min_delta (FuxiCTR counts a smaller gain as no gain)."""
    earlier = [v for v in values[:-1] if math.isfinite(v)]
    return math.isfinite(values[-1]) and (not earlier or values[-1] < min(earlier) - settings(protocol)["min_delta"])


def epochs_without_gain(values: list[float], protocol: dict) -> int:
    """The epochs since the last one that improved (FuxiCTR's stopping steps)."""
    steps = 0
    for i in range(1, len(values) + 1):
        steps = 0 if improved(values[:i], protocol) else steps + 1
    return steps


def cut_learning_rate(optimizer, protocol: dict) -> float:
    """Divide every group's learning rate by 1/plateau_factor, not below min_lr; returns the new rate."""
    p = settings(protocol)
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"] * p["plateau_factor"], p["min_lr"])
    return optimizer.param_groups[0]["lr"]
