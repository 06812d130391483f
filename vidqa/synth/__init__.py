"""vidqa/synth package."""
