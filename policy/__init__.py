"""Pure policy logic: models, globs, conditions, rate limits, the decision engine. No I/O."""
