"""Cache tiers in front of the store (L1 in-process; L2 Redis comes with the tiered cache)."""
