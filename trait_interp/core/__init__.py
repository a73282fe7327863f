"""What every phase shares: model specs and loading, prompting, positions, layers, sites, hooks, the one
forward loop, generation, batch sizes, params, datasets, scoring statistics, tables, io and errors."""
