"""GRPO training of the rewrite generators (method.md §2 step 4, §6), run by the `grpo` stage.

- `prompts`: prompts from the organic pool's windows, with a held-out split;
- `trainer`: `train_generator` (trl's GRPOTrainer, resumable) and the stage's key content;
- `evaluation`: the held-out filter pass rate and mean reward;
- `checks`: what `synpro.resolve` can reject before any work.

Getting a learning signal on a CPU (what we chose, and why). GRPO learns only from groups whose rewards
differ; measured on this machine (environment.md), the packaged SmolLM2-135M almost never writes the heading
by itself, so every heading-gated reward is 0 for the whole group and nothing is learned. Hence:

1. The heading is pre-filled (the operations' default, `grpo.prefill_heading` to override; the authors do not
   pre-fill): the prompt ends with the heading as the start of the assistant's answer, the completion is the
   body, and every reward sees heading + body, as the synthesize stage assembles it. `format` then varies
   only when the model repeats the heading, and every body-level reward (length, structure, similarity,
   quality, faithfulness) has something to score from the first step.
2. Partial credit: `quality` (fluency or a 1-5 rater, a difference to the source) is continuous by nature;
   CPU specs also set `rewards.similarity.continuous: true` (the cosine instead of cosine > 0.65), which
   ranks every completion of a group. The binary rewards stay as the paper has them.
3. Short completions and sources: the prompts are the synthesize stage's windows (`generation.window_tokens`,
   a few hundred characters in CPU specs) and `grpo.max_completion_length` defaults to the generator's
   `max_new_tokens`, so most completions can finish: a completion cut off fails the filters whatever it says.
4. The learning rate: the paper's 1e-6 is for a 1B generator over hundreds of GPU steps; at tens of CPU steps
   it moves nothing, so CPU specs set `grpo.lr` (1e-5 to 3e-5) and may set `grpo.beta: 0`.
The spec's defaults stay the paper's; trl's `frac_reward_zero_std` in metrics.jsonl says how many groups
taught nothing.
"""
