"""Software-defined assets, one module per lifecycle stage; each asset is a thin call into the engine."""
