"""Runs: profiles, the run cache (one JSON record per config hash), the runner that binds a profile
to a device, data and a cache, the scheduler (`fill`) and the book's driver (`reproduce`)."""
