"""The command line shared by the plan-based experiment scripts (finetune_rule.py, model_ranking.py).

Each named plan trains into OUT (OUT/<plan> with ``--plan all``), is analysed from its run directories, merged
into one JSON file ({plan name: result}) and printed as tables; ``--analyse-only`` trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path


def run_plans(
    doc: str | None,
    plans: dict,
    *,
    default: str,
    json_name: str,
    plot_help: str,
    train_all: Callable,
    analyse: Callable,
    render: Callable[[str, object, dict], str],
    plot: Callable[[object, Path, dict, str], None],
    argv=None,
) -> int:
    # benchmarks/_machine.py: one machine line for the performance scripts and the experiments
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _machine import cpu_model

    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument(
        "--out", required=True, help="folder for the run directories (with --plan all: OUT/<plan>)"
    )
    p.add_argument("--json", help=f"write the result here (default OUT/{json_name})")
    p.add_argument("--seeds", help="comma-separated seeds (default 200-204)")
    p.add_argument("--analyse-only", action="store_true", help="read the run directories, train nothing")
    p.add_argument("--plot", help=f"write {plot_help} to this PNG (with --plan all: its stem + _<plan>.png)")
    p.add_argument("--plan", choices=(*plans, "all"), default=default, help=f"the recipe (default {default})")
    args = p.parse_args(argv)
    names = list(plans) if args.plan == "all" else [args.plan]
    root = Path(args.out)
    path = Path(args.json) if args.json else root / json_name
    for name in names:
        plan = plans[name]
        if args.seeds:
            plan = dataclasses.replace(plan, seeds=tuple(int(s) for s in args.seeds.split(",")))
        out = root / name if args.plan == "all" else root
        seconds = None if args.analyse_only else train_all(plan, out)
        result = analyse(plan, out)
        result["machine"] = f"{cpu_model()}, torch 1 thread, nice 19"
        if seconds is not None:
            result["training_seconds_this_invocation"] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One file for every plan: {plan name: result}; the other plans' results are kept.
        everything = json.loads(path.read_text()) if path.exists() else {}
        everything[name] = result
        path.write_text(json.dumps(everything, indent=1) + "\n")
        print(render(name, plan, result))
        print()
        if args.plot:
            png = (
                args.plot
                if args.plan != "all"
                else str(Path(args.plot).with_name(f"{Path(args.plot).stem}_{name}.png"))
            )
            plot(plan, out, result, png)
    return 0
