"""Cost benchmarks: context modules side by side, the NMF ham against the official operation order, the
crossover against SDPA attention, precision, and segmentation throughput."""
