"""Token mixers on sequences: the causal sequence model, associative recall and a character LM, training on the
shared engine, the mixer comparison and the cost against N."""
