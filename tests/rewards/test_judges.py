"""LLM judges through a real OpenAI-compatible HTTP server started by the test: concurrent requests (bounded by
the spec), transient failures retried, unparseable answers counted per reward."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from synpro.errors import InputError
from synpro.rewards.judges import judge_for
from synpro.rewards.scoring import build_rewards
from synpro.spec import JudgeSpec, parse_spec

BASE = "experiment: {name: t}\nbudget: {unique_tokens: 1000, total_tokens: 2000}\n"
RH = "Here is a paraphrased version:"


class JudgeServer:
    """A chat-completions server: answers "Score: <len(prompt) % 5 + 1>" after `delay` seconds, "I cannot rate
    this." for a prompt holding GIBBERISH, 503 for the first `flaky` requests and for a prompt holding DOWN, 400
    for one holding REFUSE. It records the most requests it held at once."""

    def __init__(self, flaky: int = 0, delay: float = 0.05):
        self.flaky, self.delay = flaky, delay
        self.seen = self.busy = self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.reply(200, {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = request["messages"][-1]["content"]
                with server.lock:
                    server.seen += 1
                    first = server.seen <= server.flaky
                    server.busy += 1
                    server.peak = max(server.peak, server.busy)
                time.sleep(server.delay)
                # No longer in flight once answered: the client may send its next request as soon as it reads
                # the reply, before this thread would get to count this one out.
                with server.lock:
                    server.busy -= 1
                if first or "DOWN" in prompt:
                    return self.reply(503, {"error": {"message": "overloaded", "type": "server_error"}})
                if "REFUSE" in prompt:
                    return self.reply(400, {"error": {"message": "bad request", "type": "invalid_request"}})
                text = "I cannot rate this." if "GIBBERISH" in prompt else f"Score: {len(prompt) % 5 + 1}"
                self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def judge_spec(url: str, **extra) -> JudgeSpec:
    return JudgeSpec(model="judge", endpoint=url, prompt="Rate 1-5: {text}", score_regex=r"Score: ([1-5])",
                     backoff_seconds=0.01, **extra)


def test_requests_run_concurrently_up_to_the_bound_and_transient_failures_are_retried():
    with JudgeServer(flaky=3) as server:
        judge = judge_for(judge_spec(server.url, concurrency=4), "rewards.quality.judge")
        texts = [f"text number {i}" + ("GIBBERISH" if i % 10 == 0 else "") for i in range(40)]
        scores = judge.rate(text=texts)
    # Four in flight at once, never more (a count, not a wall-clock bound: the suite's load moves timings).
    assert server.peak == 4
    assert scores == [None if i % 10 == 0 else float(len(f"Rate 1-5: text number {i}") % 5 + 1) for i in range(40)]
    assert judge.stats() == {"requests": 43, "retries": 3, "unparseable": 4}


def test_unparseable_ratings_are_counted_per_reward_never_silently_zero():
    extra = ("rewards: {quality: {scorer: llm, judge: {model: judge, endpoint: '%s', prompt: 'Rate 1-5: {text}', "
             "score_regex: 'Score: ([1-5])', concurrency: 8, backoff_seconds: 0.01}}}")
    source = "A clean paragraph about the if statement and its suites, long enough to rate."
    with JudgeServer(flaky=2) as server:
        rewards, _ = build_rewards(parse_spec(BASE + extra % server.url), "rephrase", names=["quality"])
        outputs = [f"{RH}\nA rewrite of it number {i}." for i in range(6)] + [f"{RH}\nGIBBERISH"] * 3
        values = rewards[0](outputs, source=[source] * len(outputs))
    def rating(text: str) -> float:
        return float(len(f"Rate 1-5: {text}") % 5 + 1)

    assert values[:6] == [rating(f"A rewrite of it number {i}.") - rating(source) for i in range(6)]
    assert values[6:] == [0.0] * 3 and rewards[0].failures == 3


def test_a_judge_that_stays_down_or_refuses_stops_with_its_key():
    with JudgeServer() as server:
        judge = judge_for(judge_spec(server.url, max_retries=2), "rewards.structure.judge")
        with pytest.raises(InputError, match="after 2 retries") as down:
            judge.rate(text=["DOWN"])
        with pytest.raises(InputError, match="bad request") as refused:
            judge.rate(text=["REFUSE"])
    assert down.value.problems[0].key == refused.value.problems[0].key == "rewards.structure.judge.endpoint"
    assert judge.stats()["retries"] == 2  # the refusal is not retried


def test_runtime_knobs_stay_out_of_reward_settings():
    from synpro.rewards.scoring import reward_settings

    def settings(knobs: str) -> dict:
        extra = ("rewards: {structure: {scorer: llm, judge: {model: j, endpoint: 'http://h/v1', prompt: '{source} {output}'"
                 + knobs + "}}}")
        rewards, weights = build_rewards(parse_spec(BASE + extra), "rephrase", names=["structure"], check=False)
        return reward_settings(rewards, weights)

    assert settings("") == settings(", concurrency: 64, batch_size: 2, max_retries: 9, backoff_seconds: 3")
    assert settings("")["structure"]["judge"]["model"] == "j"


def test_a_slot_is_cut_to_its_characters_before_it_reaches_the_judge():
    with JudgeServer(delay=0) as server:
        judge = judge_for(judge_spec(server.url, slot_chars={"text": 5}), "rewards.quality.judge")
        assert judge.rate(text=["0123456789"]) == [float(len("Rate 1-5: 01234") % 5 + 1)]
