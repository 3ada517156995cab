"""Data sources that several tasks share: the animal silhouettes of `animal-shape-mnist` (:mod:`.silhouettes`) and
image files (:mod:`.images`). A task's datasets live with the task: :mod:`hamburger.seg.data` (segmentation layouts and
the animal-scenes benchmark), :mod:`hamburger.gan.data`, :mod:`hamburger.seq.data`.
"""
