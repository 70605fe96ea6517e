"""The small preset's real Qwen2.5-Coder 0.5B/1.5B pair (installed by CI through
the `small` extra, assembled from the bundle packages with the hub off)."""
from __future__ import annotations

import numpy as np
import pytest

from specs_local.chat import solution_prompt
from specs_local.engine import Model, ModelConfig
from specs_local.sampling import SamplerParams
from specs_local.search import SearchConfig
from specs_local.solver import EngineOptions, Solver

pytestmark = pytest.mark.real
CONFIG = ModelConfig(n_ctx=1024, n_seq_max=4)


def test_the_pair_shares_one_vocabulary(real_pair):
    draft, target = Model(real_pair["draft"], CONFIG), Model(real_pair["target"], CONFIG)
    try:
        assert draft.n_vocab == target.n_vocab == 151936
        assert draft.vocab_fingerprint == target.vocab_fingerprint
        assert "<|im_start|>" in target.chat_template
    finally:
        draft.close()
        target.close()


def test_forked_scoring_equals_a_fresh_context_on_the_1_5b(real_pair):
    target = Model(real_pair["target"], CONFIG)
    try:
        prefix = target.tokenize(solution_prompt(target, "Natalia sold 48 clips in April and half as many in May."),
                                 add_special=True)
        steps = ["In May she sold 48 / 2 = 24 clips.\n\n", "In May she sold 48 / 2 = 42 clips.\n\n"]
        head = target.new_sequence(prefix)
        _, forked = target.score(head, [target.tokenize(s) for s in steps])
        target.release_all(target.live_sequences)
        for step, got in zip(steps, forked):
            cont = target.tokenize(step)
            # Same batch split as the fork (prefix, then the step) in a fresh context:
            # forking itself must change nothing.
            seq = target.new_sequence(prefix)
            [split] = target.extend([(seq, cont)], kind="scored", score=True)
            target.release(seq)
            np.testing.assert_allclose(got, split, atol=1e-3, rtol=1e-3)
            # The whole text in one batch: Q4_K kernels quantise activations per
            # batch shape, so agreement is to quantisation noise, not float noise.
            seq = target.new_sequence(prefix[:1])
            whole = target.extend([(seq, prefix[1:] + cont)], kind="scored", score=True)[0][len(prefix) - 1 :]
            target.release(seq)
            assert np.abs(got - whole).mean() < 0.1 and np.abs(got - whole).max() < 0.5
        # the model prefers the right arithmetic: a check that the numbers are real log-probs
        assert forked[0].sum() > forked[1].sum()
    finally:
        target.close()


def test_specs_solves_12_times_7(real_pair):
    solver = Solver.from_paths(real_pair["target"], real_pair["draft"], reward_kind="calculator+self",
                               config=SearchConfig(n=4, max_steps=12, seed=0), engine=EngineOptions(ctx=4096))
    try:
        result = solver.solve("What is 12 times 7?")
    finally:
        solver.close()
    assert result.answer == "84"
    assert result.stop_reason == "eos"
    for m in result.stats["models"].values():
        assert m["evaluated"] == m["prompt"] + m["generated"] + m["scored"]


def test_the_small_preset_solves_with_the_probe_head_it_ships(real_pair):
    from specs_local.presets import load_preset
    from specs_local.probe import ProbeHead

    head = ProbeHead.load(load_preset("small").roles["reward"].probe_head)
    assert head.provenance["target_file"] == real_pair["target"].name
    # collected from the training split, never from a benchmark set
    assert head.provenance["collection"]["data"] == "../shared/data/gsm8k-train.jsonl"
    solver = Solver.from_preset("small", search={"max_steps": 12}, engine=EngineOptions(ctx=4096))
    try:
        assert solver.models.reward.name == "calculator+probe"
        result = solver.solve("What is 12 times 7?")
    finally:
        solver.close()
    assert result.answer == "84"
    rewards = [s.reward for s in result.steps if s.reward is not None]
    assert rewards and all(0.0 < r < 1.0 for r in rewards)
    settings = result.stats["settings"]  # the record names the head that judged it
    assert settings["reward"] == "calculator+probe" and settings["head"].startswith("small-probe.npz sha256:")


def test_the_shipped_head_refuses_another_target_and_says_what_to_do(real_pair, tiny_models):
    from click.testing import CliRunner

    from specs_local.cli import main

    result = CliRunner().invoke(main, ["solve", "What is 2 + 2?", "--target", str(tiny_models["target"]),
                                       "--draft", str(tiny_models["draft"]), "--threads", "1"])
    assert result.exit_code == 1
    assert "rewards with a probe head trained for its own target, not target.gguf; pass --reward-kind" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_the_default_load_never_uses_the_amx_layout_and_doctor_checks_the_pair(real_pair, tmp_path):
    """On an Intel CPU with AMX, llama.cpp's AMX weight buffer segfaults on the first decode: the
    default layout leaves it out (and keeps CPU_REPACK where the build has it). On other CPUs the
    build offers no AMX, and the same holds trivially. Then `doctor` decodes each file in a child."""
    import json
    import os
    import subprocess
    import sys

    from specs_local.engine import repack

    offered = repack.extra_buffer_types() or ()
    target = Model(real_pair["target"], CONFIG)
    try:
        assert "AMX" not in target.weight_buffers
        assert ("CPU_REPACK" in target.weight_buffers) == ("CPU_REPACK" in offered and
                                                          repack.plan_for("auto").use_extra)
        seq = target.new_sequence(target.tokenize(solution_prompt(target, "What is 12 times 7?"), add_special=True))
        [gen] = target.generate([seq], SamplerParams(0.0), np.random.default_rng(0), max_tokens=8,
                                stop_at_delimiter=False)
        assert gen.text.strip()
    finally:
        target.close()
    done = subprocess.run([sys.executable, "-m", "specs_local", "doctor", "--json"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [m["role"] for m in report["models"]] == ["draft", "target"]
    assert all(m["sha256_matches"] and m["decode"][0]["ok"] and "AMX" not in m["decode"][0]["weight_buffers"]
               for m in report["models"])
