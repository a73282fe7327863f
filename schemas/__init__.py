"""pandera models of every table the pipeline writes; each is used on write and on read."""
