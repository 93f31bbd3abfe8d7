"""The fusion classifier (LLaMA layers + BERT + RoBERTa, co-occurrence pooling, MLP).

The implementation lives in `fec.classify.fusion`; this module keeps the published import working:

    from DownstreamModel import DownstreamModel
    model = DownstreamModel(num_classes=32)   # the published dims: 5x4096 decoder, two 1024 encoders
    print(model.describe())
    DownstreamModel(num_classes=32, options=FusionOptions(sigma=0.5))   # settings beside the shapes
    DownstreamModel.from_config(model.config)                           # a saved model.json's `model`

    python DownstreamModel.py                 # prints the published model's shapes
"""

from fec.classify.fusion import PN_FORMS, DownstreamModel, FusionOptions, default_fusion_dim, power_normalise

__all__ = ["DownstreamModel", "FusionOptions", "PN_FORMS", "default_fusion_dim", "power_normalise"]

if __name__ == "__main__":
    print(DownstreamModel(num_classes=32).describe())
