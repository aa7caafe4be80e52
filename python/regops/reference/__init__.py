"""Pure-PyTorch references: the oracle that every kernel is tested against, and the fallback."""
