"""Pictures of decompositions: NMF / VQ / CD of a photo, and the paper's Figure 2 for a checkpoint or a photo."""
