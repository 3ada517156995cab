"""The sequence experiments, run by the CLI: ``seq compare`` (mixers side by side on MQAR or the character LM) and
``seq bench`` (one causal mixer layer's cost against N). The library (model, data, training, evaluation) never
imports them (an import contract)."""
