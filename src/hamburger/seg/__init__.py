"""Semantic segmentation: HamNet and the context heads, the datasets in their real layouts (and the embedded
animal-scenes benchmark), training, evaluation, the head comparison behind `hamburger demo`, and the ablations."""
