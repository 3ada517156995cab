"""Segmentation's experiments, run by the CLI: ``seg compare`` and ``demo`` (:mod:`.compare`), ``ablate`` (the paper's
ablations) and ``estimators`` (the gradients through the solve). They train the library's models on animal-scenes and
write tables and plots; the library (models, data, training, evaluation) never imports them (an import contract)."""
