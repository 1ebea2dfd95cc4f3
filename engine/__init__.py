"""The algorithms: data, supernet training, BN calibration, greedy slimming, run_search."""
