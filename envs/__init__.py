"""longdream.envs: real environments (Memory Maze), episode collection and storage, and the dream env."""
