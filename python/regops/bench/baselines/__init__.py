"""The official formulations the bench cases (and some tests) compare against, rewritten from the papers' code."""
