"""The value-head pipeline end to end on tiny GGUF models: `value collect`
(hidden states read in the decodes that evaluate each step, durable and
resumable), `value train`, and the `probe` reward that reads the head in the
target's own scoring prefill."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import kill_once_written

from specs_local.chat import solution_prompt
from specs_local.cli import main
from specs_local.collection import load_collection, output_paths
from specs_local.engine import Model, ModelConfig
from specs_local.errors import SpecsError
from specs_local.rewards import CalculatorReward, ProbeReward, make_reward
from specs_local.search import SearchConfig
from specs_local.solver import EngineOptions, Solver

PROBLEMS = [{"id": f"p{i}", "problem": f"What is {i} + {i % 3}?", "answer": str(i + i % 3)} for i in range(8)]


def collect_args(tiny_models, data, out, *extra):
    return ["value", "collect", str(data), "-o", str(out), "--target", str(tiny_models["boxed"]),
            "--draft", str(tiny_models["boxed-draft"]), "--threads", "1", "--ctx", "2048", "--max-steps", "4",
            "--max-step-tokens", "12", "--samples", "3", "--layers", "final", "--seed", "1", *extra]


def collected(tiny_models, folder, problems, *extra, name="out.jsonl"):
    """`value collect` of ``problems`` into ``folder``, which must succeed: its output file."""
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    out = folder / name
    result = CliRunner().invoke(main, collect_args(tiny_models, data, out, "--no-progress", *extra))
    assert result.exit_code == 0, result.output
    return out


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def collection(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("collect")
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = folder / "small.jsonl"
    result = CliRunner().invoke(main, collect_args(tiny_models, data, out))
    assert result.exit_code == 0, result.output
    return data, out


def test_collect_labels_every_step_with_its_solutions_outcome(collection):
    data, out = collection
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [p["id"] for p in PROBLEMS]
    for record in records:
        assert [s["source"] for s in record["solutions"]] == ["target"] * 3 + ["draft"] * 3
        for sol in record["solutions"]:
            assert sol["correct"] == (sol["answer"] == record["gold"])  # math-verify on one-digit answers
    loaded = load_collection(out)
    assert len(loaded.features) == sum(r["features"]["rows"] for r in records)
    assert set(loaded.labels) == {0, 1}  # the boxed model is right about 1 time in 10
    meta = json.loads(output_paths(out)[1].read_text())
    assert meta["capture"] == ["result_norm"] and meta["width"] == loaded.features.shape[1]
    # beside each row: the target's mean log-prob per token over the solution up to that step
    sol = records[0]["solutions"][3]
    lp = np.array([s["target_logprob"] for s in sol["steps"]])
    n = np.array([s["tokens"] for s in sol["steps"]])
    rows = loaded.solutions == loaded.solutions[loaded.groups == records[0]["id"]][0] + 3
    np.testing.assert_allclose(loaded.scalars["solution_logprob"][rows], np.cumsum(lp * n) / np.cumsum(n))
    np.testing.assert_allclose(loaded.scalars["target_logprob"][rows], lp)  # and each step's own, by model
    np.testing.assert_allclose(loaded.scalars["policy_logprob"][rows], [s["policy_logprob"] for s in sol["steps"]])


def test_collected_features_are_the_targets_hidden_state_at_each_step_end(collection, tiny_models):
    """Each row equals the final-norm hidden state a fresh target evaluation of
    prompt + steps gives at the step's last token (read there in embeddings mode)."""
    _, out = collection
    record = json.loads(out.read_text().splitlines()[0])
    loaded = load_collection(out)
    model = Model(tiny_models["boxed"], ModelConfig(n_ctx=2048, n_seq_max=2, n_threads=1, embeddings=True))
    try:
        prompt = model.tokenize(solution_prompt(model, record["problem"]), add_special=True)
        row = record["features"]["offset"]
        for index, sol in enumerate(record["solutions"]):
            tokens = list(prompt)
            for step in sol["steps"]:
                tokens += model.tokenize(step["text"]) + ([model.vocab.eot_token] if step["finish"] == "eog" else [])
                if index in (0, 3):  # one solution from the target, one from the draft
                    seq = model.new_sequence(tokens)
                    np.testing.assert_allclose(loaded.features[row], seq.hidden, rtol=2e-3, atol=2e-3)
                    model.release(seq)
                row += 1
    finally:
        model.close()


def test_collect_resumes_after_a_kill_without_losing_or_repeating(tiny_models, tmp_path, collection):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / "run.jsonl"
    kill_once_written(["specs-local", *collect_args(tiny_models, data, out, "--no-progress")], out, lines=3)
    kept = out.read_bytes().count(b"\n")
    assert 3 <= kept < len(PROBLEMS), "the kill came too late to test anything"
    before = load_collection(out).features.copy()
    result = CliRunner().invoke(main, collect_args(tiny_models, data, out, "--no-progress"))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [p["id"] for p in PROBLEMS]  # each once, in order
    after = load_collection(out)
    np.testing.assert_array_equal(after.features[: len(before)], before)
    # Seeds are per problem: the resumed run collects what an unbroken run did.
    whole = load_collection(collection[1])
    np.testing.assert_array_equal(after.features, whole.features)
    assert [s["steps"] for r in records for s in r["solutions"]] == [
        s["steps"] for line in collection[1].read_text().splitlines() for s in json.loads(line)["solutions"]]


def test_a_collection_still_being_written_is_read_untouched(collection, tmp_path):
    """value train on a collection whose writer is mid-record: the whole records
    are read and the file is left as the writer has it."""
    _, source = collection
    copy = tmp_path / "live.jsonl"
    copy.write_bytes(source.read_bytes() + b'{"id": "next", "problem": "Wha')
    for original, copied in zip(output_paths(source), output_paths(copy)):
        copied.write_bytes(original.read_bytes())
    before = copy.read_bytes()
    live, whole = load_collection(copy), load_collection(source)
    np.testing.assert_array_equal(live.features, whole.features)
    assert copy.read_bytes() == before


def replay_args(tiny_models, source, out, *extra):
    return ["value", "replay", str(source), "-o", str(out), "--target", str(tiny_models["boxed"]),
            "--threads", "1", "--ctx", "2048", "--no-progress", *extra]


def test_replay_reads_the_same_features_again_from_the_texts_alone(collection, tiny_models, tmp_path):
    """A collection whose features file is gone is rebuilt from its JSONL: the
    same rows (to float16 and batch rounding), the same records, in two runs that
    resume one another, and other layers on request."""
    _, source = collection
    kept = tmp_path / "source.jsonl"  # the source without its features file
    kept.write_bytes(source.read_bytes())
    output_paths(kept)[1].write_bytes(output_paths(source)[1].read_bytes())
    out = tmp_path / "replayed.jsonl"
    first = CliRunner().invoke(main, replay_args(tiny_models, kept, out, "--layers", "final", "--limit", "3"))
    assert first.exit_code == 0, first.output
    assert out.read_bytes().count(b"\n") == 3
    rest = CliRunner().invoke(main, replay_args(tiny_models, kept, out, "--layers", "final"))
    assert rest.exit_code == 0, rest.output
    assert "8/8 problems replayed" in rest.output and "0 of " in rest.output  # the tiny vocabulary round-trips
    original, replayed = load_collection(source), load_collection(out)
    np.testing.assert_allclose(replayed.features, original.features, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(replayed.labels, original.labels)
    np.testing.assert_array_equal(replayed.scalars["solution_logprob"], original.scalars["solution_logprob"])
    meta = json.loads(output_paths(out)[1].read_text())
    assert meta["replayed_from"] == str(kept) and meta["target_sha256"] == original.meta["target_sha256"]

    two = tmp_path / "two-layers.jsonl"
    result = CliRunner().invoke(main, replay_args(tiny_models, kept, two, "--layers", "0,final", "--limit", "2"))
    assert result.exit_code == 0, result.output
    wider = load_collection(two)
    width = original.features.shape[1]
    assert json.loads(output_paths(two)[1].read_text())["capture"] == ["l_out-0", "result_norm"]
    np.testing.assert_allclose(wider.features[:, width:], original.features[: len(wider.features)],
                               rtol=2e-3, atol=2e-3)


def test_replay_refuses_another_target_and_its_own_output_in_one_line(collection, tiny_models, tmp_path):
    _, source = collection
    other = CliRunner().invoke(main, replay_args(tiny_models, source, tmp_path / "o.jsonl", "--target",
                                                 str(tiny_models["boxed-draft"])))
    assert other.exit_code == 1 and "was collected with boxed.gguf, not boxed-draft.gguf" in other.output
    same = CliRunner().invoke(main, replay_args(tiny_models, source, source))
    assert same.exit_code != 0 and "another file than the collection" in same.output
    missing = CliRunner().invoke(main, replay_args(tiny_models, tmp_path / "none.jsonl", tmp_path / "o.jsonl"))
    assert missing.exit_code != 0 and "is not a collection" in missing.output
    for result in (other, same, missing):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()  # nothing is written before the checks pass


def test_replay_feeds_the_end_token_each_solution_was_sampled_with(tiny_models, tmp_path):
    """A solution may end with any end-of-generation token (this target ends with
    <|im_end|> or <|endoftext|>); replay feeds the one that was sampled, so its rows
    are the collection's."""
    either = ["--target", str(tiny_models["boxed-either-end"])]
    source, out = collected(tiny_models, tmp_path, PROBLEMS[:4], *either), tmp_path / "replayed.jsonl"
    result = CliRunner().invoke(main, replay_args(tiny_models, source, out, "--layers", "final", *either))
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(load_collection(out).features, load_collection(source).features, rtol=2e-3, atol=2e-3)
    model = Model(tiny_models["boxed-either-end"], ModelConfig(n_ctx=256, n_seq_max=1, n_threads=1))
    try:
        names = {model.vocab.token_text(step["end_token"]) for record in read_records(source)
                 for sol in record["solutions"] for step in sol["steps"] if step["finish"] == "eog"}
    finally:
        model.close()
    assert names == {"<|im_end|>", "<|endoftext|>"}  # both ends occur, so the rows above tell them apart


def test_a_problem_whose_prompt_leaves_no_room_for_a_step_is_collected_and_replayed(tiny_models, tmp_path):
    """Every solution ends before its first step (the context is full): the record
    says so, with no feature row, and replay copies it."""
    long = {"id": "long", "problem": "What is" + " one" * 30 + "?", "answer": "1"}
    source, out = collected(tiny_models, tmp_path, [long], "--ctx", "256"), tmp_path / "replayed.jsonl"
    [record] = read_records(source)
    assert record["n_solutions"] == 6 and all(sol["steps"] == [] for sol in record["solutions"])
    assert record["features"]["rows"] == 0 and len(load_collection(source).features) == 0
    result = CliRunner().invoke(main, replay_args(tiny_models, source, out, "--layers", "final", "--ctx", "256"))
    assert result.exit_code == 0, result.output
    assert "1/1 problems replayed" in result.output and len(load_collection(out).features) == 0


def test_a_draft_that_cannot_start_a_solution_leaves_the_target_no_sequence(tiny_models):
    """A collect worker serves problem after problem with the same models: a draft
    whose chat template refuses the prompt fails that problem, and the target is
    left holding nothing."""
    from specs_local.batch import Problem
    from specs_local.collect import collect_problem

    config = ModelConfig(n_ctx=1024, n_seq_max=4, n_threads=1)
    target, draft = Model(tiny_models["boxed"], config), Model(tiny_models["no-system"], config)
    try:
        with pytest.raises(SpecsError, match="System role not supported"):
            collect_problem(Problem("p", "What is 1 + 1?", "2"), target=target, draft=draft, k=2,
                            config=SearchConfig(max_steps=2, max_step_tokens=8))
        assert target.live_sequences == [] and target.free_sequences == 4
    finally:
        target.close()
        draft.close()


@pytest.fixture(scope="module")
def head_file(collection, tmp_path_factory):
    _, out = collection
    head = tmp_path_factory.mktemp("head") / "probe.npz"
    result = CliRunner().invoke(main, ["value", "train", str(out), "-o", str(head), "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    assert "chose result_norm" in result.output
    return head


def test_value_train_and_eval_never_load_llama_cpp(collection, tmp_path):
    """Fitting and scoring a logistic head reads a collection with numpy alone: the
    commands run in a process that never imports llama.cpp."""
    _, out = collection
    head = tmp_path / "probe.npz"
    script = ("import sys\n"
              "from specs_local.cli import main\n"
              f"for args in (['value', 'train', {str(out)!r}, '-o', {str(head)!r}, '--val-fraction', '0.25'],\n"
              f"             ['value', 'eval', {str(head)!r}, {str(out)!r}]):\n"
              "    main(args, standalone_mode=False)\n"
              "print('loaded:', sorted(m for m in sys.modules if m == 'llama_cpp' or m.startswith('specs_local.engine')))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert head.exists() and "pairwise last step" in result.stdout
    assert "loaded: []" in result.stdout, result.stdout


def test_train_writes_a_head_that_records_its_target(head_file, tiny_models):
    from specs_local.probe import ProbeHead

    head = ProbeHead.load(head_file)
    target = Model(tiny_models["boxed"], ModelConfig(n_ctx=512, n_seq_max=2, n_threads=1))
    try:
        assert head.provenance["target_vocab"] == target.vocab_fingerprint
    finally:
        target.close()
    assert head.provenance["capture"] == ["result_norm"]
    assert {"pairwise_last", "pairwise_first_differing", "auc_steps"} <= set(head.provenance["validation"])
    report = json.loads(head_file.with_suffix(".report.json").read_text())
    assert report["chosen"] == ["result_norm"]


def test_the_probe_reward_solves_with_the_head(head_file, tiny_models):
    solver = Solver.from_paths(tiny_models["boxed"], tiny_models["boxed-draft"], reward_kind="calculator+probe",
                               value_head=head_file, config=SearchConfig(n=3, max_steps=4, max_step_tokens=12),
                               engine=EngineOptions(threads=1, ctx=2048))
    try:
        for method in ("specs", "beam-target", "beam-draft"):
            result = solver.solve("What is 3 + 4?", method=method)
            assert result.steps and all(0 < s.reward < 1 for s in result.steps if s.reward is not None)
    finally:
        solver.close()


def test_a_head_for_another_target_is_refused(head_file, tiny_models):
    with pytest.raises(SpecsError, match="trained for a different target"):
        Solver.from_paths(tiny_models["other"], tiny_models["other"], reward_kind="probe", value_head=head_file,
                          engine=EngineOptions(threads=1, ctx=512))
    result = CliRunner().invoke(main, ["solve", "What is 3 + 4?", "--target", str(tiny_models["target"]),
                                       "--draft", str(tiny_models["draft"]), "--reward-kind", "probe",
                                       "--value-head", str(head_file), "--threads", "1"])
    assert result.exit_code == 1 and "trained for a different target" in result.output
    assert "Traceback" not in result.output


def test_the_probe_adds_no_decode_to_the_scoring_prefill(head_file, tiny_models):
    """Drafts scored by the target: the probe reads the hidden states that prefill
    computed, so llama.cpp's counters do not move."""
    from specs_local.probe import ProbeHead

    head = ProbeHead.load(head_file)
    target = Model(tiny_models["boxed"], ModelConfig(n_ctx=1024, n_seq_max=8, n_threads=1,
                                                     capture=tuple(head.provenance["capture"])))
    try:
        reward = make_reward("calculator+probe", target=target, value_head=head_file)
        problem = "What is 3 + 4?"
        prompt = target.new_sequence(target.tokenize(solution_prompt(target, problem), add_special=True))
        candidates = ["\\boxed{7}\n\n", "\\boxed{5}\n\n", "2 + 2 = 5.\n\n"]
        kids, _ = target.score(prompt, [target.tokenize(c) for c in candidates])
        evaluated, calls = target.evaluated_tokens(), target.usage.decode_calls
        rewards = reward.score(problem, [], candidates, contexts=kids)
        assert (target.evaluated_tokens(), target.usage.decode_calls) == (evaluated, calls)
        scalars = np.array([[k.mean_logprob] for k in kids]) if head.scalar_names else None
        values = head.predict(np.stack([k.hidden for k in kids]), scalars)
        np.testing.assert_allclose(rewards[:2], values[:2])  # arithmetic that holds is not endorsed: the head judges
        assert rewards[2] == pytest.approx(min(0.05, values[2]))  # the calculator's veto caps, never raises
        assert reward.fallback.stats.candidates == 3
        # A head that rates every step below the veto's value (text it finds unlikely):
        # the false step must still come out lowest, not be raised to 0.05.
        head.calib_c -= 20.0
        low = CalculatorReward(ProbeReward(target, head), veto=True).score(problem, [], candidates, contexts=kids)
        assert low.max() < 0.05 and low[2] == pytest.approx(head.predict(np.stack([k.hidden for k in kids]), scalars)[2])
    finally:
        target.release_all(target.live_sequences)
        target.close()


def test_a_head_reading_the_solutions_log_prob_scores_alike_in_the_search_and_from_text(head_file, tiny_models):
    """With the target's forks (SPECS, beam search) the probe reads the log-probs
    their evaluation computed; without them (a draft's contexts) it rebuilds the
    solution from text and must score its tokens to read the same value."""
    from specs_local.probe import SOLUTION_LOGPROB, ProbeHead

    head = ProbeHead.load(head_file)
    head.scalar_names, head.scalar_weights = [SOLUTION_LOGPROB], np.array([5.0])
    target = Model(tiny_models["boxed"], ModelConfig(n_ctx=1024, n_seq_max=8, n_threads=1,
                                                     capture=tuple(head.provenance["capture"])))
    try:
        problem, steps = "What is 3 + 4?", ["First, 3 + 4 = 7.\n\n"]
        candidates = ["\\boxed{7}", "\\boxed{5}", "So the answer is 6.\n\n"]
        prompt = target.new_sequence(target.tokenize(solution_prompt(target, problem), add_special=True))
        [solution], _ = target.score(prompt, [target.tokenize(steps[0])])
        kids, lps = target.score(solution, [target.tokenize(c) for c in candidates])
        in_search = ProbeReward(target, head).score(problem, steps, candidates, contexts=kids)
        means = [k.mean_logprob for k in kids]
        assert len(set(means)) > 1 and all(m < 0 for m in means)
        target.release_all([prompt, solution] + kids)
        from_text = ProbeReward(target, head)
        np.testing.assert_allclose(from_text.score(problem, steps, candidates), in_search, atol=2e-3)
        from_text.reset()
    finally:
        target.close()


def test_collect_refuses_problems_it_cannot_label_before_loading_anything(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(PROBLEMS[0]) + "\n" + json.dumps({"id": "q", "problem": "What is 2 + 2?"}) + "\n")
    out = tmp_path / "run.jsonl"
    result = CliRunner().invoke(main, ["value", "collect", str(data), "-o", str(out), "--target", "/nope.gguf"])
    assert result.exit_code == 2, result.output
    assert "1 of 2 problems cannot be labelled (line 2: problem 'q' has no 'answer')" in result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.fixture(scope="module")
def mc_collection(tiny_models, tmp_path_factory):
    """Monte Carlo labels on every other problem, the first two steps of each solution."""
    return collected(tiny_models, tmp_path_factory.mktemp("mc"), PROBLEMS[:4], "--mc-rollouts", "3", "--mc-every", "2",
                     "--mc-steps", "2")


def test_monte_carlo_labels_are_the_share_of_completions_that_end_correct(mc_collection):
    records = read_records(mc_collection)
    shares = {i / 3 for i in range(4)}
    for position, record in enumerate(records):
        for sol in record["solutions"]:
            labelled = [step for step in sol["steps"] if "mc" in step]
            if position % 2:
                assert not labelled
                continue
            assert len(labelled) == min(2, len(sol["steps"]))
            assert all(step["mc_k"] == 3 and min(abs(step["mc"] - s) for s in shares) < 1e-9 for step in labelled)
            if len(sol["steps"]) <= 2:  # the last step: nothing is left to complete, its value is the outcome
                assert sol["steps"][-1]["mc"] == (1.0 if sol["correct"] else 0.0)
    loaded = load_collection(mc_collection)
    assert np.isfinite(loaded.mc).sum() == sum(
        "mc" in step for r in records for s in r["solutions"] for step in s["steps"])
    # every solution's first step shares the prompt: one branch point per problem
    first = loaded.step_index == 0
    assert len(np.unique(loaded.prefix[first])) == len(records)


def test_monte_carlo_rollouts_may_outnumber_the_samples(tiny_models, tmp_path):
    """Each model is loaded with the sequences its work needs: the target forks 4
    rollouts per labelled step though it samples 1 solution per problem."""
    records = read_records(collected(tiny_models, tmp_path, PROBLEMS[:2], "--samples", "1", "--mc-rollouts", "4",
                                     "--mc-steps", "1"))
    assert [len(r["solutions"]) for r in records] == [2, 2]
    assert all(sol["steps"][0]["mc_k"] == 4 for r in records for sol in r["solutions"])


def test_no_draft_never_resolves_the_draft(tiny_models, tmp_path):
    """--no-draft samples from the target alone, so a --draft that names nothing is no error."""
    for draft in (str(tmp_path / "missing.gguf"), "no-such-role"):
        out = collected(tiny_models, tmp_path, PROBLEMS[:2], "--no-draft", "--draft", draft,
                        name=f"{draft.rsplit('/', 1)[-1]}.jsonl")
        assert [s["source"] for r in read_records(out) for s in r["solutions"]] == ["target"] * 6
        assert json.loads(output_paths(out)[1].read_text())["draft_file"] is None


def test_branch_point_accuracy_counts_pairs_of_one_prefix_ordered_by_their_values(mc_collection):
    from specs_local.probe_train import branch_point_accuracy

    loaded = load_collection(mc_collection)
    rng = np.random.default_rng(0)
    scores = rng.random(len(loaded.labels))
    scores[:3] = scores[3]  # some ties
    rows = np.ones(len(scores), dtype=bool)
    wins = pairs = 0.0
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            vi, vj = loaded.mc[i], loaded.mc[j]
            if loaded.prefix[i] != loaded.prefix[j] or not (np.isfinite(vi) and np.isfinite(vj)) or vi == vj:
                continue
            pairs += 1
            wins += 0.5 if scores[i] == scores[j] else float((scores[i] > scores[j]) == (vi > vj))
    assert pairs > 0, "the tiny collection has no branch point with differing values"
    assert branch_point_accuracy(loaded, scores, rows) == (pytest.approx(wins / pairs), pairs)
    assert branch_point_accuracy(loaded, loaded.mc.copy(), rows)[0] == 1.0  # the values order themselves


def test_figures_count_pairs_within_one_source_as_a_search_compares_them(collection):
    """Per source: a right and a wrong solution of one model, at their last steps and
    step by step at one depth; never a target step against a draft step."""
    from specs_local.probe_train import figures

    loaded = load_collection(collection[1])
    scores = np.random.default_rng(0).random(len(loaded.labels))
    fig = figures(loaded, scores, np.ones(len(loaded.labels), dtype=bool))
    for source in ("target", "draft"):
        wins = pairs = 0
        own = np.flatnonzero(loaded.source == source)
        for i in own:
            for j in own:
                if (loaded.groups[i], loaded.step_index[i]) == (loaded.groups[j], loaded.step_index[j]) \
                        and loaded.labels[i] == 1 and loaded.labels[j] == 0:
                    pairs += 1
                    wins += scores[i] > scores[j]
        assert pairs > 0, f"the tiny collection has no right and wrong {source} solutions of one problem"
        assert (fig[f"pairwise_same_step_{source}"], fig[f"pairs_same_step_{source}"]) == (pytest.approx(wins / pairs), pairs)
        assert 0 < fig[f"pairs_last_{source}"] <= pairs
    assert fig["pairs_last_target"] + fig["pairs_last_draft"] < fig["pairs_last"]  # the mixed pairs are left out


def test_value_eval_reports_a_heads_figures_on_another_collection(head_file, mc_collection):
    result = CliRunner().invoke(main, ["value", "eval", str(head_file), str(mc_collection), "--json"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output)
    assert fig["problems"] == 4 and fig["pairs_branch"] > 0 and 0 <= fig["pairwise_branch"] <= 1


def test_eval_reward_scores_the_probe_on_labelled_pairs(head_file, tiny_models, data_dir):
    from test_eval_reward_cli import table_rows

    result = CliRunner().invoke(main, ["eval-reward", "--data", str(data_dir), "--limit", "4", "--sources", "gsm8k",
                                       "--kinds", "probe,calculator+probe", "--target", str(tiny_models["boxed"]),
                                       "--value-head", str(head_file), "--ctx", "2048", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == ["probe (gsm8k)", "calculator+probe (gsm8k)"]
    assert all(0.0 < float(rows["probe (gsm8k)"][key]) < 1.0 for key in ("mean (correct)", "mean (wrong)"))
    # the veto: every wrong twin's arithmetic is false, so it gets 0.05 whatever the head says
    assert float(rows["calculator+probe (gsm8k)"]["mean (wrong)"]) == pytest.approx(0.05)


def test_thresholds_let_through_only_drafts_as_good_as_the_targets_steps():
    from conftest import _load_script

    tune = _load_script("tune_thresholds").tune
    rng = np.random.default_rng(0)
    label = rng.random(400) < 0.4
    reward = np.where(label, rng.uniform(0.5, 1.0, 400), rng.uniform(0.0, 0.6, 400))  # overlapping on 0.5-0.6
    log_ratio = rng.normal(0.0, 0.1, 400)
    found = tune(log_ratio, reward, label.astype(int), target_rate=0.9, n=4)
    accepted = log_ratio + found["beta"] * reward > found["tau_reject"]
    assert label[accepted].mean() >= 0.9 and found["accepted_precision"] == pytest.approx(label[accepted].mean())
    assert 0.25 < found["draft_acceptance"] <= 0.4  # most of the right drafts get through
    assert tune(log_ratio, rng.random(400), label.astype(int), target_rate=0.99, n=4) is None  # a reward that knows nothing
    strict = _load_script("tune_thresholds").most_selective(log_ratio, reward, label.astype(int), n=4)
    passed = log_ratio + strict["beta"] * reward > strict["tau_reject"]
    assert passed.sum() == 20 and strict["accepted_precision"] == pytest.approx(label[passed].mean()) == 1.0


def test_tune_thresholds_says_in_one_line_when_no_threshold_can_be_chosen(collection, head_file, tmp_path, capsys):
    from conftest import _load_script

    # The tiny draft and target agree and the tiny head scores every step alike: nothing separates the drafts.
    _, out = collection
    found = tmp_path / "thresholds.json"
    assert _load_script("tune_thresholds").main([str(out), str(head_file), "--out", str(found)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("every validation draft step scores the same (log-ratio plus beta times reward), "
                         "so no threshold separates them")
    assert not found.exists()


def test_the_variants_script_scores_each_layer_raw_and_demeaned_per_source(collection, head_file, tmp_path):
    from conftest import _load_script

    script = _load_script("value_variants")
    X = np.arange(12.0).reshape(6, 2)
    groups = np.array(["a", "a", "b", "b", "b", "c"])
    centred = script.demeaned(X, groups)
    for g in "abc":
        np.testing.assert_allclose(centred[groups == g].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(centred[0] - centred[1], X[0] - X[1])  # what differs within a problem stays
    out = tmp_path / "variants.json"
    assert script.main([str(collection[1]), "--head", str(head_file), "--held-out", str(collection[1]),
                        "--val-fraction", "0.25", "--out", str(out)]) == 0
    variants = json.loads(out.read_text())["variants"]
    names = [v["variant"] for v in variants]
    assert names[:2] == [f"head {head_file}", "solution_logprob alone"]
    assert sum(n.startswith("result_norm raw") for n in names) == 3  # one fit chosen on one-source pairs
    assert sum(n.endswith("chosen on one-source pairs") for n in names) == 1
    assert sum(n.startswith("result_norm demeaned") for n in names) == 2
    for v in variants:
        assert {"pairwise_last", "pairwise_same_step_target", "pairwise_same_step_draft"} <= set(v["held_out"])
    # on its own training problems the shipped-style head ranks at least as well as on unseen ones
    assert variants[0]["held_out"]["pairs_last"] > variants[0]["validation"]["pairs_last"]
