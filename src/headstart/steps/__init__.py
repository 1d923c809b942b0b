"""The steps: one `run(cfg, inputs) -> result` per module, wiring the library; the drivers call them."""
