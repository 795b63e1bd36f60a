"""Long-sequence recommendation with decoupled embeddings (DARE), with DIN and TWIN baselines."""
