"""What downstream evaluation adds to a quickstart arm: wall-clock of the pretraining stage alone vs
the pretraining stage plus its `evaluate` stage (offline `synpro_cloze` task, lm-eval, batched
likelihoods), side by side on the quickstart's own data, model and budget.

Issue 12's target is at most +20% on the quickstart's wall time. The quickstart's arms all look
like this one (same model, same T, same snapshot interval), so the per-arm ratio is the figure;
generation (the synthetic sets) is not part of either side, which makes the ratio an upper bound.
Both sides run in one fresh workdir each, in this one process (lm-eval's import, paid once per
sweep process, is counted on the evaluation side).

    python benchmarks/evaluation_overhead.py                 # ~2 min on 2 cores
    python benchmarks/evaluation_overhead.py --arm oracle
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", default="repetition", choices=["repetition", "oracle"])
    args = parser.parse_args()

    from synpro.plan import plan_trial
    from synpro.spec import load_spec
    from synpro.stages import Runner

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(QUICKSTART).with_params({"experiment.workdir": tmp})
        arm = plan_trial(spec).arm(args.arm)
        runner = Runner(Path(tmp) / "stages", progress=False)
        for upstream in arm.stage.inputs.values():  # data pools are shared by both sides: not timed
            runner.run(upstream)
        started = time.perf_counter()
        runner.run(arm.stage)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scores = runner.run(arm.evaluation)
        eval_seconds = time.perf_counter() - started
    print(f"arm {args.arm}: pretraining {train_seconds:.1f} s; evaluation of {len(scores)} snapshots "
          f"{eval_seconds:.1f} s ({eval_seconds / max(len(scores), 1):.2f} s each, task build included)")
    print(f"final acc/avg {scores[-1]['metrics']['acc/avg']:.3f} on {sum(scores[-1]['items'].values())} items")
    print(f"evaluation overhead: +{100 * eval_seconds / train_seconds:.0f}% of the arm's pretraining wall time")


if __name__ == "__main__":
    main()
