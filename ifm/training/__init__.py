"""Training: the loop (`loop`), metrics, the two recipes with the source of every setting, the
ranges of every setting, and the speed benchmark."""
