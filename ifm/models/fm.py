"""Factorization machine (Rendle 2010): Eq. 1 computed in the linear-time form of Eq. 2."""
from ifm.models.layers import FMBase, fm_interaction


class FM(FMBase):
    def forward(self, x):
        linear, v = self.fm_parts(x)
        return linear + fm_interaction(v)
