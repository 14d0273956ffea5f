"""One small file per model; `build_model` makes any of them by name."""
from ifm.models.afm import AFM
from ifm.models.deepfm import DeepFM
from ifm.models.difm import DIFM
from ifm.models.fm import FM
from ifm.models.ifm import IFM
from ifm.models.lr import LR
from ifm.models.nfm import NFM
from ifm.models.wide_deep import WideDeep

# "libfm" is the FM architecture; the trainer gives it libFM's optimiser (plain SGD).
MODELS = {"lr": LR, "fm": FM, "libfm": FM, "ifm": IFM, "nfm": NFM, "afm": AFM, "deepfm": DeepFM, "wide_deep": WideDeep,
          "difm": DIFM}
# The paper pre-trains the embeddings of these with an FM (section 5.1).
PRETRAINED_WITH_FM = ("ifm", "afm", "deepfm", "wide_deep")   # not DIFM: see ifm/models/difm.py
# Models whose factor estimating network gives each row input-aware factors m_x (model.factors(x)).
INPUT_AWARE = ("ifm", "difm")
DISPLAY_NAMES = {"lr": "LR", "fm": "FM", "libfm": "LibFM", "ifm": "IFM", "nfm": "NFM", "afm": "AFM", "deepfm": "DeepFM",
                 "wide_deep": "Wide&Deep", "difm": "DIFM"}


def build_model(name: str, num_features: int, num_fields: int, embedding_size: int, **options):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_features, num_fields, embedding_size, **options)
