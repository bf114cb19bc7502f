"""The default metrics (Inception Score, FID, R-precision) with their Inception network and caches; `plugin` registers them."""
