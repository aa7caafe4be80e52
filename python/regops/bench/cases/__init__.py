"""One bench module per op family, discovered by regops.bench.harness: each exposes
``cases(quick: bool, device: torch.device) -> list[Case]``. The module name is also an --op filter."""
