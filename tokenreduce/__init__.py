"""tokenreduce package."""
