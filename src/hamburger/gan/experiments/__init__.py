"""HamGAN's experiment, run by the CLI: ``gan compare`` (arms side by side over seeds, same network and budget). The
library (models, data, training, evaluation) never imports it (an import contract)."""
