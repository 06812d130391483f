"""vlm package."""
