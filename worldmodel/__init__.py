"""longdream.worldmodel: the long-context hybrid video world model (block-wise Mamba2 + frame-local attention)."""
