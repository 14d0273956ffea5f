"""Factorization machine (Rendle 2010): Eq. 1 computed in the linear-time form of Eq. 2."""
import torch

from ifm.models.layers import FMBase, fm_interaction


class FM(FMBase):
    def forward(self, x):
        linear, v = self.fm_parts(x)
        return linear + fm_interaction(v)

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, task: str) -> torch.Tensor:
        """One plain SGD step on the summed loss with the FM's gradient written out, returning
        the batch's summed loss: the update autograd and torch.optim.SGD make (all gradients
        at the current parameters), without their fixed cost per step, which is most of the time
        at libFM's batch of 8 (d y_hat / d w_i = 1, d y_hat / d v_i = sum_j v_j - v_i)."""
        ids = x.reshape(-1)
        w, table = self.linear.weight.weight, self.embedding.weight
        v = table.index_select(0, ids).view(*x.shape, table.shape[1])               # [batch, h, k]
        total = v.sum(dim=1)                                                           # [batch, k]
        y_hat = (self.linear.bias + w.index_select(0, ids).view(x.shape).sum(dim=1)
                 + 0.5 * (total.square().sum(dim=1) - v.square().sum(dim=(1, 2))))
        if task == "binary":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(y_hat, y, reduction="sum")
            d_y_hat = torch.sigmoid(y_hat) - y
        else:
            loss = (y_hat - y).square().sum()
            d_y_hat = 2 * (y_hat - y)
        step = -lr * d_y_hat                                                           # [batch]
        self.linear.bias += step.sum()
        w.index_add_(0, ids, step.repeat_interleave(x.shape[1]).unsqueeze(1))
        table.index_add_(0, ids, ((total.unsqueeze(1) - v) * step.view(-1, 1, 1)).reshape(-1, table.shape[1]))
        return loss
