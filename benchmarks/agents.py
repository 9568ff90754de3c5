"""Agents trained in imagination against the same algorithm on real steps, a random policy and the oracle.

    python -m benchmarks.agents --runs runs/agent-dreamer runs/agent-dreamer-real runs/agent-sb3 runs/agent-sb3-real \\
        --heldout-episodes data/episodes/mm9-heldout

Reads each run's ``eval.json`` (written by ``python -m agents.dreamer`` and ``python -m agents.sb3``: the agent's
final real-env evaluation on fixed seeds), runs the random policy and the scripted oracle
(``envs.policies.OraclePolicy``; Memory Maze only, left out for envs without its map, e.g. Crafter) on the SAME
seeds and episode length, and reports per method the return and
reward rate per 100 steps (mean and 95% t-interval over episodes), the paired difference to random (an agent
"beats random" when that interval excludes 0), wall time, steps per second, imagined steps and the real steps
behind it. With ``--heldout-episodes`` the world model's action sensitivity is measured beside the results
(``worldmodel.evaluate.action_sensitivity``): an agent cannot learn from a dream that ignores its actions.

Writes ``agents.json``, ``agents.png`` (bars with 95% intervals) and ``agents.md`` (the table) to ``--out``; for
runs in another world the names carry it (``agents_crafter.*`` for Crafter: ``envs.worlds.result_name``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium

import envs  # noqa: F401  (registers the Memory Maze ids)
import worldmodel
from agents.real import episode_record, summarise_episodes
from benchmarks.common import RESULTS_DIR, figure, machine_info, write_results
from envs.fileio import atomic_write_text
from envs.policies import OraclePolicy, RandomPolicy
from envs.worlds import env_world, result_name
from planners.evaluate import mean_ci, oracle_missing, run_policy_episode, sensitivity, sensitivity_sentence

__all__ = ["baseline", "collect", "main", "markdown"]


def _label(run: dict) -> str:
    name = run["agent"] if run["agent"] != "sb3" else f"sb3 {run.get('algo', '')}".strip()
    return f"{name} ({run['world']})"


def load_run(folder: Path) -> dict:
    """A run's eval.json, checked to hold what the table needs (ValueError naming the file otherwise)."""
    path = Path(folder) / "eval.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (run python -m agents.dreamer / agents.sb3 into {folder} first)")
    run = json.loads(path.read_text())
    for key in ("agent", "world", "env", "eval", "env_steps", "learn_seconds"):
        if key not in run:
            raise ValueError(f"{path}: missing field {key!r} (not an agents eval.json?)")
    return run


def baseline(method: str, env_id: str, seeds: list[int], max_steps: int) -> dict | None:
    """The random policy or the oracle on the seeds: :func:`agents.real.summarise_episodes` of its episodes (None
    for the oracle in an env that lacks what it reads, see ``planners.evaluate.oracle_missing``)."""
    env = gymnasium.make(env_id)
    try:
        if method == "oracle" and oracle_missing(env, seeds[0]) is not None:
            return None
        recs = []
        for s in seeds:
            policy = OraclePolicy() if method == "oracle" else RandomPolicy(int(env.action_space.n))
            rewards, _, _ = run_policy_episode(env, policy, s, max_steps)
            recs.append(episode_record(s, rewards))
    finally:
        env.close()
    return summarise_episodes(recs)


def collect(runs: list[Path], heldout: Path | None = None) -> dict:
    """The results dict of the runs plus random and oracle on the first run's seeds."""
    loaded = [load_run(r) for r in runs]
    if not loaded:
        raise ValueError("--runs: expected at least one run folder")
    first = loaded[0]["eval"]
    seeds, max_steps, env_id = first["seeds"], first["max_steps"], loaded[0]["env"]
    for r, run in zip(runs, loaded):
        if run["eval"]["seeds"] != seeds or run["eval"]["max_steps"] != max_steps or run["env"] != env_id:
            raise ValueError(
                f"{r}/eval.json: evaluated on {run['env']} seeds {run['eval']['seeds']} x {run['eval']['max_steps']} "
                f"steps, but {runs[0]} on {env_id} seeds {seeds} x {max_steps}: evaluate every run alike"
            )
    methods: dict[str, dict] = {}
    for run in loaded:
        m = dict(run["eval"])
        m.update(
            agent=run["agent"],
            world=run["world"],
            env_steps=run["env_steps"],
            imagined_steps=run.get("imagined_steps", 0),
            real_steps_used=run.get("real_steps_used"),
            learn_seconds=run["learn_seconds"],
            steps_per_s=run["env_steps"] / max(run["learn_seconds"], 1e-9),
            checkpoint=run.get("checkpoint"),
        )
        methods[_label(run)] = m
    for b in ("random", "oracle"):
        if (m := baseline(b, env_id, seeds, max_steps)) is not None:
            methods[b] = m
    rand = {e["seed"]: e["reward_rate_per_100"] for e in methods["random"]["episodes"]}
    for name, m in methods.items():
        if name == "random":
            continue
        d = mean_ci([e["reward_rate_per_100"] - rand[e["seed"]] for e in m["episodes"]])
        m["minus_random_rate_per_100"] = d
        m["beats_random"] = bool(d["n"] > 1 and d["mean"] - d["ci95"] > 0)
    sens = None
    ckpt = next((run.get("checkpoint") for run in loaded if run.get("checkpoint")), None)
    if heldout is not None and ckpt:
        sens = sensitivity(worldmodel.load(ckpt, device="cpu"), Path(heldout), windows=8)
    dream_agents = [n for n, m in methods.items() if m.get("world") == "dream"]
    return {
        "benchmark": "agents",
        "what": "agents trained in the dream vs the same algorithm on real steps, random and the oracle, real env",
        "env": env_id,
        "seeds": seeds,
        "max_steps": max_steps,
        "methods": methods,
        "action_sensitivity": sens,
        "goals": {"a_dream_agent_beats_random_95ci": any(methods[n]["beats_random"] for n in dream_agents)},
        "machine": machine_info("cpu"),
    }


def markdown(res: dict) -> str:
    """The results table (mean ± 95% t-interval half-width over episodes)."""
    lines = [
        f"Real env `{res['env']}`, seeds {res['seeds'][0]}-{res['seeds'][-1]}, {res['max_steps']} steps per episode.",
        "",
        "| method | return | reward rate / 100 steps | minus random (paired) | env steps learnt from "
        "| real steps behind it | learning wall time | steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in res["methods"].items():
        ret, rate = m["return"], m["reward_rate_per_100"]
        d = m.get("minus_random_rate_per_100")
        dtxt = (
            f"{d['mean']:+.2f} ± {d['ci95']:.2f}" + (" (beats random)" if m.get("beats_random") else "") if d else "–"
        )
        if "env_steps" in m:
            kind = "imagined" if m["world"] == "dream" else "real"
            steps = f"{m['env_steps']:,} {kind}"
            real = f"{m['real_steps_used']['steps']:,}" if m.get("real_steps_used") else "–"
            wall = f"{m['learn_seconds'] / 60:.1f} min"
            sps = f"{m['steps_per_s']:.0f}"
        else:
            steps, real, wall, sps = "–", "0", "–", "–"
        lines.append(
            f"| {name} | {ret['mean']:.2f} ± {ret['ci95']:.2f} | {rate['mean']:.2f} ± {rate['ci95']:.2f} | {dtxt} "
            f"| {steps} | {real} | {wall} | {sps} |"
        )
    met = res["goals"]["a_dream_agent_beats_random_95ci"]
    lines += [
        "",
        f"Goal, an agent trained only in the dream beats random (95% interval): {'met' if met else 'not met'}.",
    ]
    s = res.get("action_sensitivity")
    if s:
        lines += ["", "The world model's action sensitivity " + sensitivity_sentence(s)]
    return "\n".join(lines) + "\n"


def plot(res: dict):
    """Bars of the reward rate per 100 steps with 95% intervals per method."""
    fig, ax = figure(figsize=(8, 4))
    names = list(res["methods"])
    rates = [res["methods"][n]["reward_rate_per_100"] for n in names]
    colors = ["C0" if "dream" in n else ("C1" if "real" in n else ("C7" if n == "random" else "C2")) for n in names]
    ax.bar(range(len(names)), [r["mean"] for r in rates], yerr=[r["ci95"] for r in rates], color=colors, capsize=4)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("real reward per 100 steps (95% CI)")
    ax.set_title(f"{res['env']}: {len(res['seeds'])} unseen worlds x {res['max_steps']} steps", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.agents``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.agents", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="agent run folders holding eval.json")
    p.add_argument(
        "--heldout-episodes",
        type=Path,
        default=None,
        help="held-out episodes for the world model's action sensitivity (default: not measured)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="folder of agents.json/.png/.md (agents_crafter.* for Crafter agents, named after the runs' env)",
    )
    args = p.parse_args(argv)
    try:
        res = collect(args.runs, args.heldout_episodes)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = result_name("agents", env_world(res["env"]))
    write_results(name, res, plot(res), out=args.out)
    atomic_write_text(Path(args.out) / f"{name}.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
