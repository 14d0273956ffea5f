"""DeepFM (Guo et al. 2017): FM plus an MLP (200-200-200 in the IFM paper) over the
concatenated embeddings, both reading the same embeddings: Wide & Deep with the FM
interaction term added."""
from ifm.models.wide_deep import WideDeep


class DeepFM(WideDeep):
    default_hidden = (200, 200, 200)

    def forward(self, x):
        inputs = self.inputs(x)
        return self.wide_and_deep(x, inputs) + inputs.interaction()
