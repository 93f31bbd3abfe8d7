"""Fine-tune one encoder end to end with the Hugging Face Trainer: the baseline for the fusion classifier.

    python finetune.py --task semeval_eng --model offline:all-minilm-l6-v2 --runs 3
    python finetune.py -dataset ED -model bert-large-cased -device cuda -runs 3

Writes Logs/{task}_finetune_{stamp}/ (config.json, train.log, results.json, model.json,
checkpoints/seedN/ via save_pretrained, per_label.csv, curves.png) and a row in Logs/runs.csv
beside main.py's runs. See `fec.cli.finetune` (the options) and `fec.classify.finetuning` (the recipe).
"""

import sys

from fec.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
