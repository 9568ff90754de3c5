"""Model-based agents that learn inside imagined rollouts (Dreamer-style actor-critic, SB3 in the dream)."""
