"""The engine on tiny random-weight GGUF models: real llama.cpp, real KV caches."""
from __future__ import annotations

import numpy as np
import pytest

from specs_local.engine import Model, ModelConfig
from specs_local.errors import ContextFullError, ModelLoadError, OutOfSequencesError, SpecsError
from specs_local.sampling import SamplerParams

CONFIG = ModelConfig(n_ctx=1024, n_batch=64, n_seq_max=8, n_threads=1)
PROMPT = "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def target(open_tiny):
    return open_tiny("target", CONFIG)


def fresh_logprobs(path, tokens: list[int]) -> np.ndarray:
    """Log-probs of tokens[1:] from a brand-new context over the whole text."""
    model = Model(path, CONFIG)
    try:
        seq = model.new_sequence(tokens[:1])
        return model.extend([(seq, tokens[1:])], kind="scored", score=True)[0]
    finally:
        model.close()


def test_forked_prefix_scores_equal_a_fresh_context(tiny_models, target):
    prefix = target.tokenize(PROMPT)
    continuations = [target.tokenize(t) for t in ("12 * 7 = 84.\n\n", "Let me think.", "84")]
    head = target.new_sequence(prefix)
    kids, logprobs = target.score(head, continuations)
    for cont, got in zip(continuations, logprobs):
        want = fresh_logprobs(tiny_models["target"], prefix + cont)[len(prefix) - 1 :]
        assert got.shape == (len(cont),)
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    assert all(k.tokens == prefix + c for k, c in zip(kids, continuations))


def test_scores_do_not_depend_on_batch_chunking(tiny_models):
    """A continuation longer than n_batch is split over several decodes."""
    small = Model(tiny_models["target"], ModelConfig(n_ctx=1024, n_batch=16, n_seq_max=4, n_threads=1))
    try:
        prefix = small.tokenize(PROMPT)
        cont = small.tokenize("Step one: 12 * 7 = 84. " * 3)
        head = small.new_sequence(prefix)
        _, [got] = small.score(head, [cont])
    finally:
        small.close()
    want = fresh_logprobs(tiny_models["target"], prefix + cont)[len(prefix) - 1 :]
    # Other chunk sizes change the kernels' summation order and where K/V are
    # rounded to f16, so equality holds to f16 precision, not bit for bit.
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-3)


def test_batched_greedy_generation_equals_one_at_a_time(target):
    prompts = [PROMPT, "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n", "Hello there", "x"]
    greedy = SamplerParams(temperature=0)
    rng = np.random.default_rng(0)
    seqs = [target.new_sequence(target.tokenize(p)) for p in prompts]
    together = target.generate(seqs, greedy, rng, max_tokens=12, stop_at_delimiter=False)
    target.release_all(seqs)
    for prompt, batched in zip(prompts, together):
        seq = target.new_sequence(target.tokenize(prompt))
        [alone] = target.generate([seq], greedy, rng, max_tokens=12, stop_at_delimiter=False)
        target.release(seq)
        assert alone.tokens == batched.tokens
        np.testing.assert_allclose(alone.logprobs, batched.logprobs, atol=2e-3)  # batch shapes change summation order


def test_each_sequence_may_have_its_own_sampler(target):
    """One batch, one greedy row and sampled rows: the greedy row is what greedy decoding gives alone."""
    greedy, hot = SamplerParams(temperature=0), SamplerParams(temperature=1.0)
    head = target.new_sequence(target.tokenize(PROMPT))
    [alone] = target.generate(target.fork(head, 1), greedy, np.random.default_rng(0), max_tokens=10,
                              stop_at_delimiter=False)
    kids = target.fork(head, 3)
    mixed = target.generate(kids, [greedy, hot, hot], np.random.default_rng(0), max_tokens=10, stop_at_delimiter=False)
    assert mixed[0].tokens == alone.tokens
    assert mixed[1].tokens != alone.tokens or mixed[2].tokens != alone.tokens  # the others are sampled
    with pytest.raises(SpecsError, match="2 samplers for 3 sequences"):
        target.generate(kids, [greedy, hot], np.random.default_rng(0), max_tokens=2)
    target.release_all(target.live_sequences)


def test_tokens_evaluated_are_the_minimum(target):
    """Prompt once, every generated and scored token once, as llama.cpp counts them."""
    target.reset_usage()
    prompt = target.tokenize(PROMPT)
    head = target.new_sequence(prompt)  # prompt: len(prompt)
    kids = target.fork(head, 3)  # nothing
    gens = target.generate(kids, SamplerParams(temperature=1.0), np.random.default_rng(3), max_tokens=6)
    # Each generation feeds back all its tokens but the last, which stays pending.
    fed_back = sum(len(g.tokens) - 1 for g in gens)
    extra_prompt = target.tokenize("Check: 2 + 2 = 4.")
    target.extend([(kids[0], extra_prompt)], kind="prompt")  # pending token + the new text
    scored = [target.tokenize(" yes"), target.tokenize(" no, 5")]
    target.score(kids[1], scored)  # kids[1]'s pending token once, then each continuation
    expected = len(prompt) + fed_back + 1 + len(extra_prompt) + 1 + sum(map(len, scored))
    assert target.evaluated_tokens() == expected
    assert target.usage.counted == expected


def test_release_frees_every_cell(target):
    head = target.new_sequence(target.tokenize(PROMPT))
    kids = target.fork(head, 4)
    target.generate(kids, SamplerParams(temperature=1.0), np.random.default_rng(1), max_tokens=5)
    live = [head] + kids
    assert all(target.cells_used(s) > 0 for s in live)
    ids = [s.seq_id for s in live]
    target.release_all(live)
    assert target.live_sequences == []
    assert target.free_sequences == CONFIG.n_seq_max
    probe = [type(head)(i) for i in ids]
    assert all(target.cells_used(s) == 0 for s in probe)


def some_tokens(model, n: int) -> list[int]:
    tokens = model.tokenize(PROMPT * (n // 4 + 1))[:n]
    assert len(tokens) == n
    return tokens


def test_live_cells_count_shared_cells_once(target):
    """Forks share their parent's cells; a cell lives while any sequence holds it."""
    head = target.new_sequence(some_tokens(target, 10))
    assert target.live_cells == 10
    kids = target.fork(head, 3)
    assert target.live_cells == 10
    target.extend([(k, some_tokens(target, 5)) for k in kids], kind="prompt")
    assert target.live_cells == 10 + 3 * 5
    target.release(head)
    assert target.live_cells == 25  # the kids still hold the prefix
    target.truncate(kids[0], 10)
    assert target.live_cells == 20
    target.release_all(kids)
    assert target.live_cells == 0


def test_usage_records_each_decode_shape_and_the_cells_it_attended(target):
    target.reset_usage()
    head = target.new_sequence(some_tokens(target, 10))  # one decode of 10 rows
    kids = target.fork(head, 2)
    target.extend([(k, [head.tokens[0]]) for k in kids], kind="prompt")  # one decode of 2 rows
    many = some_tokens(target, 40)
    target.extend([(head, many)], kind="prompt")  # 40 rows: the size class 64
    usage = target.usage
    assert usage.decode_batches == {"10": [1, 10, 10 * 10], "2": [1, 2, 2 * 12], "64": [1, 40, 40 * 52]}
    assert usage.attended_cells == 10 * 10 + 2 * 12 + 40 * 52
    target.release_all(kids + [head])


def test_truncate_then_extend_matches_never_having_appended(target):
    prefix = target.tokenize(PROMPT)
    seq = target.new_sequence(prefix)
    logits = seq.logits.copy()
    target.extend([(seq, target.tokenize("wrong turn"))], kind="prompt")
    target.truncate(seq, len(prefix), logits)
    cont = target.tokenize("84")
    [after] = target.extend([(seq, cont)], kind="scored", score=True)
    other = target.new_sequence(prefix)
    [direct] = target.extend([(other, cont)], kind="scored", score=True)
    np.testing.assert_allclose(after, direct, atol=1e-5)


def test_missing_and_corrupt_files_give_one_line_errors(tmp_path, tiny_models):
    with pytest.raises(ModelLoadError, match="not found"):
        Model(tmp_path / "nope.gguf", CONFIG)
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Model(text, CONFIG)
    data = tiny_models["target"].read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as err:
        Model(truncated, CONFIG)
    assert "\n" not in str(err.value)


def test_step_ends_at_the_delimiter_even_inside_a_merged_token(target):
    """The tiny vocabulary merges '.\\n\\n' into one token, as Qwen's does."""
    merged = target.tokenize(".\n\n")
    assert len(merged) == 1
    rng = np.random.default_rng(7)
    seqs = [target.new_sequence(target.tokenize(PROMPT)) for _ in range(6)]
    gens = target.generate(seqs, SamplerParams(temperature=1.0), rng, max_tokens=40)
    finishes = {g.finish for g in gens}
    assert finishes <= {"delimiter", "eog", "length"}
    assert "delimiter" in finishes
    for g in gens:
        if g.finish == "delimiter":
            assert g.text.endswith("\n\n") and g.text.lstrip().count("\n\n") == 1
            assert target.detokenize(g.tokens) == g.text
            assert len(g.logprobs) == len(g.tokens)
        if g.finish == "length":
            assert len(g.tokens) == 40


def test_fingerprint_and_chat_template(tiny_models, target):
    draft = Model(tiny_models["draft"], CONFIG)
    other = Model(tiny_models["other"], CONFIG)
    try:
        assert draft.vocab_fingerprint == target.vocab_fingerprint
        assert other.vocab_fingerprint != target.vocab_fingerprint
    finally:
        draft.close()
        other.close()
    rendered = target.render_chat([{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert target.vocab.is_end_of_generation(target.tokenize("<|im_end|>")[0])
    assert target.detokenize(target.tokenize(PROMPT)) == PROMPT


def test_running_out_of_room_is_a_clean_error(tiny_models, target):
    with pytest.raises(ContextFullError, match="context"):
        target.new_sequence(target.tokenize("a" * 2000))
    head = target.new_sequence(target.tokenize(PROMPT))
    with pytest.raises(OutOfSequencesError, match="sequences"):
        target.fork(head, CONFIG.n_seq_max)


def test_running_out_of_sequences_names_the_workload_they_were_sized_for(tiny_models):
    from specs_local.slots import collect_slots
    from specs_local.solver import EngineOptions

    model = Model(tiny_models["target"], EngineOptions(ctx=256, threads=1).model_config(collect_slots(1)["target"]))
    try:
        head = model.new_sequence(model.tokenize(PROMPT))
        sized_for = "2 sized for value collect --samples 1 --mc-rollouts 0; raise n_seq_max"
        with pytest.raises(OutOfSequencesError, match=f"2 forks asked, 1 sequences free \\({sized_for}\\)"):
            model.fork(head, 2)
        model.fork(head, 1)
        with pytest.raises(OutOfSequencesError, match=f"all 2 parallel sequences are in use \\({sized_for}\\)"):
            model.new_sequence()
    finally:
        model.close()


def test_a_sequence_keeps_the_log_probs_of_the_tokens_it_sampled_or_scored(target):
    """What a probe reads beside the hidden state: the model's mean log-prob over
    a solution's steps, never its prompt, across generation (delimiter splits
    included), scoring, forks and truncation."""
    prefix = target.tokenize(PROMPT)
    head = target.new_sequence(prefix)
    assert head.logprobs == {} and np.isnan(head.mean_logprob)
    rng = np.random.default_rng(7)
    seqs = target.fork(head, 6)
    gens = target.generate(seqs, SamplerParams(temperature=1.0), rng, max_tokens=40)
    assert "delimiter" in {g.finish for g in gens}  # a split token's replacements are counted too
    for g in gens:
        assert sorted(g.seq.logprobs) == list(range(len(prefix), len(prefix) + len(g.tokens)))
        assert g.seq.mean_logprob == pytest.approx(g.mean_logprob)
    step = target.tokenize("12 * 7 = 84.\n\n")
    kids, [scored] = target.score(gens[0].seq, [step])
    both = np.concatenate([gens[0].logprobs, scored])
    assert kids[0].mean_logprob == pytest.approx(both.mean())
    assert gens[0].seq.mean_logprob == pytest.approx(gens[0].mean_logprob)  # the fork's scores are its own
    target.extend([(kids[0], target.tokenize(" Is that right?"))], kind="prompt")  # a question: not scored
    assert kids[0].mean_logprob == pytest.approx(both.mean())
    target.truncate(kids[0], len(prefix) + len(gens[0].tokens))
    assert kids[0].mean_logprob == pytest.approx(gens[0].mean_logprob)
    target.release_all(seqs + kids + [head])
    assert head.logprobs == {}
