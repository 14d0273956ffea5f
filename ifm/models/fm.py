"""Factorization machine (Rendle 2010): Eq. 1 computed in the linear-time form of Eq. 2.

The IFM authors pre-train with their code/FM.py, which puts batch norm (decay 0.9) and
dropout (keep 0.7) on the pooled interaction vector before summing it (FM.py:93-96):
``batch_norm`` and ``interaction_dropout`` give that model.
"""
import torch
from torch import nn

from ifm.models.kernels import Dropout
from ifm.models.layers import FMBase


class FM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, batch_norm: bool = False,
                 interaction_dropout: float = 0.0, regularize_embeddings: bool = False, init_std: float = 0.01,
                 sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        if init_std != 0.01:   # libFM draws v from N(0, 0.1) (libfm.cpp:119, fm_model.h:94-98)
            nn.init.normal_(self.embedding.weight, std=init_std)
        self.regularize_embeddings = regularize_embeddings
        layers = ([nn.BatchNorm1d(embedding_size, eps=1e-3)] if batch_norm else []) + \
            ([Dropout(interaction_dropout)] if interaction_dropout > 0 else [])
        if layers:
            self.pool = nn.Sequential(*layers)

    def forward(self, x):
        """Eq. 1: w0 + sum_i w_i + sum_{i<j} <v_i, v_j> (in Eq. 2's linear time)."""
        return self.linear_term(x) + self.pooled_interaction(self.inputs(x))

    def regularized(self, biases=False):
        # The paper's FM has no L2; the released FM.py puts it on the embeddings V (FM.py:106-107).
        return [self.embedding.weight] if self.regularize_embeddings else []

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, task: str, label_range=None) -> torch.Tensor:
        """libFM's SGD step (srendle/libfm fm_learn_sgd_element.h:60-65, fm_sgd.h:34-50) for each
        instance of the batch, all at the current parameters, with the gradient written out; returns
        the batch's summed loss. The multiplier is clip(y_hat) - y for regression (the prediction
        clipped to the training labels' range: the gradient of half the squared error of the clipped
        prediction), sigmoid(y_hat) - y for CTR; d y_hat / d w_i = 1, d y_hat / d v_i = sum_j v_j - v_i.
        No regularisation (libFM's default is 0)."""
        ids = x.reshape(-1)
        w, table = self.linear.weight.weight, self.embedding.weight
        v = table.index_select(0, ids).view(*x.shape, table.shape[1])               # [batch, h, k]
        total = v.sum(dim=1)                                                           # [batch, k]
        y_hat = (self.linear.bias + w.index_select(0, ids).view(x.shape).sum(dim=1)
                 + 0.5 * (total.square().sum(dim=1) - v.square().sum(dim=(1, 2))))
        if task == "binary":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(y_hat, y, reduction="sum")
            multiplier = torch.sigmoid(y_hat) - y
        else:
            clipped = y_hat if label_range is None else y_hat.clamp(*label_range)
            loss = (clipped - y).square().sum()
            multiplier = clipped - y
        step = -lr * multiplier                                                        # [batch]
        self.linear.bias += step.sum()
        w.index_add_(0, ids, step.repeat_interleave(x.shape[1]).unsqueeze(1))
        table.index_add_(0, ids, ((total.unsqueeze(1) - v) * step.view(-1, 1, 1)).reshape(-1, table.shape[1]))
        return loss
