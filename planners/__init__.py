"""MPC planners (random shooting, CEM, MPPI) over batched imagined rollouts."""
