"""Jobs built on the library: decomposition demo, benchmarks. Heavy dependencies are imported lazily here."""
