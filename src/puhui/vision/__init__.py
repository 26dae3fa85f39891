"""Vision: image pre- and post-processing, box utilities and losses for the vision models."""
