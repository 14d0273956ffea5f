"""Logistic regression: w0 + sum_i w_i over the active features, an FM without its pairwise term
(Eq. 1's linear part). The open benchmark's weakest baseline (BARS Frappe_x1: reczoo/BARS
ranking/ctr/LR/LR_frappe_x1). It has no embedding table, so nothing but w0 and w is trained or
regularised."""
from ifm.models.layers import FMBase


class LR(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        del self.embedding                       # no v_i: LR has only w0 and w_i

    def forward(self, x):
        """w0 + sum_i w_i."""
        return self.linear_term(x)

    def use_feature_fields(self, x_all):
        return False                             # no MLP on stacked embeddings to compute per feature

    def feature_parameters(self):
        return list(self.linear.parameters())
