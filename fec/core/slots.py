"""The three feature slots of the published method, by name, in the order the fusion stacks them
(the decoder first). Torch-free, so the `fec` dispatcher can name them without loading a model
library; what fills each slot is `fec.features.backbones.SLOTS`."""

SLOT_NAMES = ("llama", "bert", "roberta")
