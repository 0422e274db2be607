"""bench.arbitration on synthetic corpora whose answers are known by construction: the export of a
labelling run's records, the escalation curves (APGR, CPT), the subsets, the costs and the report."""
import json
import random

import numpy as np
import pytest
from matplotlib.image import imread

from bench.arbitration import (
    calibrated_points,
    GSM8K,
    MIXED,
    SQUAD_PASSAGE,
    Subset,
    area_under,
    build_subsets,
    cost_to_reach,
    escalation_curve,
    evaluate_corpus,
    evaluate_subset,
    export_corpus,
    main,
    target_verdict,
)
from bench.datasets import BenchItem, load_dataset, split_of, user_turn
from bench.summary import _cpt, _trapezoid_area
from router.core.arbiters.features import Draft, base_features
from router.core.arbiters.scorers import task_score, task_score_from_features

ARTICLES = ("Alps", "Rhine", "Nile", "Danube", "Volga", "Seine", "Thames", "Loire")  # both splits among them
QUESTIONS_PER_ARTICLE = 3


# ---------------------------------------------------------------- synthetic corpus rows


def corpus_row(dataset, item_id, edge, cloud, *, logprob=0.5, rule=0.5, verify=0.5, agree=None,
               passage=False, split="test", edge_usd=0.001, sample_usd=0.0, verify_usd=0.0, cloud_usd=0.01):
    features = {"lp_exp_mean": logprob, "has_passage": float(passage), "span_short": 0.0, "span_verbatim": 0.0,
                "span_in_focus": 0.0,
                "has_consistency": float(agree is not None), "consistency_agree": agree or 0.0,
                "has_verification": 1.0, "verify_p_yes": verify}
    return {"dataset": dataset, "item_id": item_id, "group": item_id, "split": split,
            "edge_quality": edge, "cloud_quality": cloud, "features": features, "rule_score": rule,
            "edge_answer_usd": edge_usd, "sample_usd": sample_usd, "verify_usd": verify_usd,
            "scorer_usd": sample_usd + verify_usd, "cloud_usd": cloud_usd}


def arrays(gains_and_edges):
    edge = np.array([e for e, _ in gains_and_edges], dtype=float)
    cloud = np.array([e + g for e, g in gains_and_edges], dtype=float)
    return edge, cloud


GRADED = [(0.0, 1.0), (0.2, 0.7), (0.5, 0.5), (0.1, 0.3), (0.6, 0.0), (1.0, -0.4), (0.3, 0.2), (0.0, 0.0)]


def metrics_of(scores, edge, cloud):
    curve = escalation_curve(np.asarray(scores, dtype=float), edge, cloud)
    return (area_under(curve.shares, curve.pgrs), cost_to_reach(curve.shares, curve.pgrs, 0.5),
            cost_to_reach(curve.shares, curve.pgrs, 0.8))


# ---------------------------------------------------------------- curves


def test_a_score_that_orders_the_gains_perfectly_matches_the_oracle() -> None:
    edge, cloud = arrays(GRADED)
    gains = cloud - edge
    oracle = metrics_of(edge - cloud, edge, cloud)
    # Any decreasing function of the gain ranks the items as the oracle does.
    perfect = metrics_of(np.exp(-3 * gains) + 7, edge, cloud)
    assert perfect == pytest.approx(oracle)
    # Worked by hand: gains sorted 1.0, .7, .5, .3, .2, 0, 0 -> -.4, total 2.3.
    assert oracle[1] == pytest.approx(1 / 8 + (1.15 - 1.0) / 0.7 / 8)
    assert oracle[0] > 0.5


def test_a_constant_score_is_the_straight_line() -> None:
    edge, cloud = arrays(GRADED)
    apgr, cpt50, cpt80 = metrics_of([0.3] * len(GRADED), edge, cloud)
    curve = escalation_curve(np.full(len(GRADED), 0.3), edge, cloud)
    assert list(curve.shares) == [0.0, 1.0]  # ties escalate together: no point in between
    assert (apgr, cpt50, cpt80) == pytest.approx((0.5, 0.5, 0.8))


def test_a_reversed_score_is_worse_than_random() -> None:
    edge, cloud = arrays(GRADED)
    apgr, cpt50, cpt80 = metrics_of(cloud - edge, edge, cloud)  # escalates the smallest gains first
    assert apgr < 0.5
    assert cpt50 > 0.5 and cpt80 > 0.8


def test_equal_scores_escalate_together() -> None:
    edge, cloud = np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 1.0])
    curve = escalation_curve(np.array([0.1, 0.1, 0.9]), edge, cloud)
    assert list(curve.shares) == pytest.approx([0.0, 2 / 3, 1.0])
    assert list(curve.pgrs) == pytest.approx([0.0, 0.5, 1.0])
    assert curve.thresholds == [None, 0.1, 0.9]


def test_apgr_and_cpt_agree_with_the_bench_summary_sweep_code() -> None:
    draw = np.random.default_rng(3)
    for _ in range(50):
        n = int(draw.integers(2, 30))
        edge = draw.random(n).round(1)
        cloud = np.clip(edge + draw.normal(0.3, 0.4, n), 0, 1).round(1)
        if cloud.sum() <= edge.sum():
            continue
        curve = escalation_curve(draw.random(n).round(1), edge, cloud)
        shares, pgrs = list(curve.shares), list(curve.pgrs)
        assert area_under(curve.shares, curve.pgrs) == pytest.approx(_trapezoid_area(shares, pgrs))
        for target in (0.5, 0.8):
            assert cost_to_reach(curve.shares, curve.pgrs, target) == pytest.approx(_cpt(shares, pgrs, target))


# ---------------------------------------------------------------- subsets, scorers, costs


def test_a_subset_without_a_positive_gap_says_so() -> None:
    rows = [corpus_row(GSM8K, f"g{i}", 1.0, 1.0 if i % 2 else 0.0) for i in range(6)]
    result = evaluate_subset(Subset(GSM8K, rows, {GSM8K: 6}), resamples=50, seed=0)
    assert "gap not positive" in result["reason"]
    assert all(s["apgr"] is None and s["cpt_80_ci"] is None for s in result["scorers"])
    assert "not measurable" in target_verdict(result, "test")["text"]


def test_the_mixed_subset_takes_the_smaller_count_of_each_task_drawn_with_the_seed() -> None:
    rows = ([corpus_row(GSM8K, f"g{i:02d}", 0.0, 1.0) for i in range(5)]
            + [corpus_row(SQUAD_PASSAGE, f"s{i:02d}", 0.2, 0.8) for i in range(20)])
    first = build_subsets(rows, seed=1)
    assert first[MIXED].counts == {GSM8K: 5, SQUAD_PASSAGE: 5}
    assert [r["dataset"] for r in first[MIXED].rows].count(SQUAD_PASSAGE) == 5
    assert len(first[SQUAD_PASSAGE].rows) == 20 and len(first[GSM8K].rows) == 5
    assert first[MIXED].rows == build_subsets(list(reversed(rows)), seed=1)[MIXED].rows  # seeded, order-free
    drawn = {tuple(r["item_id"] for r in build_subsets(rows, seed=s)[MIXED].rows) for s in range(5)}
    assert len(drawn) > 1


def test_score_functions_read_the_features_and_costs_follow_the_scorer() -> None:
    # logprob ranks the gains backwards; verify ranks them as the oracle does.
    rows = [corpus_row(GSM8K, f"g{i}", edge, cloud, logprob=cloud - edge + 2, verify=edge - cloud + 1,
                       agree=edge, sample_usd=0.002, verify_usd=0.004)
            for i, (edge, cloud) in enumerate([(1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.0, 1.0)])]
    result = evaluate_subset(Subset(GSM8K, rows, {GSM8K: 4}), resamples=20, seed=0)
    by_name = {s["scorer"]: s for s in result["scorers"]}
    assert by_name["verify"]["apgr"] == pytest.approx(by_name["oracle"]["apgr"])
    assert by_name["logprob"]["apgr"] < 0.5
    assert by_name["random"]["apgr"] == 0.5 and by_name["random"]["cpt_80"] == 0.8
    assert (result["edge_quality"], result["cloud_quality"], result["oracle_quality"]) == (0.5, 0.75, 1.0)
    # $/1k at no escalation and at full escalation: edge 0.001, cloud 0.01, plus the scorer's own runs.
    assert by_name["logprob"]["points"]["usd_per_1k"][0] == pytest.approx(1.0)
    assert by_name["consistency"]["points"]["usd_per_1k"][0] == pytest.approx(3.0)
    assert by_name["verify"]["points"]["usd_per_1k"][-1] == pytest.approx(15.0)
    assert by_name["rule"]["scorer_usd_per_1k"] == pytest.approx(2.0)


def test_the_task_score_from_features_is_the_scorers_task_score() -> None:
    passage = "Passage: " + "The Rhine flows through Basel and Cologne. " * 20
    for content, answer in ((passage + "\nQuestion: Which city?", "Basel"),
                            (passage + "\nQuestion: Which city?", "a city I do not know of"),
                            ("What is 2 + 2?", "4")):
        draft = Draft(messages=[{"role": "user", "content": content}], text=answer,
                      token_logprobs=[-0.1, -0.7], finish_reason="stop")
        features = base_features(draft)
        assert task_score_from_features(features) == task_score(draft, features)


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed() -> None:
    draw = random.Random(0)
    rows = [corpus_row(GSM8K, f"g{i}", float(e), float(c), logprob=draw.random())
            for i, (e, c) in enumerate((draw.random() < 0.3, draw.random() < 0.6) for _ in range(60))]
    subset = Subset(GSM8K, rows, {GSM8K: 60})
    first = evaluate_subset(subset, resamples=200, seed=4)
    again = evaluate_subset(subset, resamples=200, seed=4)
    assert [s["apgr_ci"] for s in first["scorers"]] == [s["apgr_ci"] for s in again["scorers"]]
    by_name = {s["scorer"]: s for s in first["scorers"]}
    for name in ("logprob", "oracle"):
        low, high = by_name[name]["apgr_ci"]
        assert low < by_name[name]["apgr"] < high
    assert by_name["verify"]["apgr_ci"] == [0.5, 0.5]  # a constant score is the straight line in every resample
    assert by_name["random"]["apgr_ci"] is None  # exact


# ---------------------------------------------------------------- the target and the written report


def test_evaluate_writes_the_report_and_judges_the_target(tmp_path) -> None:
    # verify ranks the gains perfectly: 8 of the 24 mixed test items hold the whole gap, so
    # CPT(80%) = 0.8 * 8 / 24, about 0.27; every other scorer is flat (CPT(80%) = 0.8).
    rows = []
    for dataset in (GSM8K, SQUAD_PASSAGE):
        for i in range(20):
            gain = 1.0 if i < 4 else 0.0
            rows.append(corpus_row(dataset, f"{dataset}-{i:02d}", 0.0, gain, verify=1 - gain,
                                   split="test" if i % 2 == 0 or i < 4 else "train"))
    corpus = tmp_path / "arbitration.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = evaluate_corpus(corpus, tmp_path / "out", split="test", resamples=100, seed=0, command="cmd")
    mixed = summary["subsets"][MIXED]
    assert mixed["counts"] == {GSM8K: 12, SQUAD_PASSAGE: 12}
    assert summary["target"]["met"] is True and summary["target"]["best"] == "verify"
    assert summary["target"]["ci"][1] < 0.5
    assert summary["corpus"]["lines"] == 40
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "| verify |" in markdown and "(40 lines)" in markdown and "split: test" in markdown
    assert "| scorer | asked 10%: given, PGR | asked 30%: given, PGR | asked 50%: given, PGR |" in markdown
    verify = next(s for s in mixed["scorers"] if s["scorer"] == "verify")
    assert [point["asked"] for point in verify["calibrated"]] == [0.1, 0.3, 0.5]
    assert "calibrated" not in next(s for s in mixed["scorers"] if s["scorer"] == "oracle")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["target"]["best"] == "verify"
    for png in ("escalation_curves.png", "quality_vs_cost.png"):
        assert imread(tmp_path / "out" / png).shape[0] > 100


def test_a_share_calibrated_on_train_scores_gives_that_share_on_like_scores_and_re_calibrates_on_drift() -> None:
    train = np.linspace(0.0, 1.0, 101)
    edge, cloud = np.zeros(100), np.zeros(100)
    cloud[:10] = 1.0  # the ten lowest scores hold the whole gap
    like = np.linspace(0.005, 0.995, 100)
    points = calibrated_points(train, like, edge, cloud, seed=0)
    assert [p["asked"] for p in points] == [0.1, 0.3, 0.5]
    assert [p["given"] for p in points] == pytest.approx([0.1, 0.3, 0.5], abs=0.035)
    assert points[2]["pgr"] == pytest.approx(1.0) and points[2]["quality"] == pytest.approx(0.1)
    # The same traffic scored lower: a window still full of train scores over-escalates (a frozen
    # threshold would give 0.6 at 30% asked); a short window re-calibrates on the new scores.
    drifted = calibrated_points(train, like / 2, edge, cloud, seed=0)
    short = calibrated_points(train, like / 2, edge, cloud, seed=0, window=20)
    assert drifted[1]["given"] > 0.4 and short[1]["given"] == pytest.approx(0.3, abs=0.035)
    assert calibrated_points(np.array([]), like, edge, cloud, seed=0) == []


def test_ties_on_the_calibrated_threshold_are_drawn_to_the_share_asked() -> None:
    coarse = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 250)  # self-consistency agreement: four values
    points = calibrated_points(coarse, coarse, np.zeros(1000), np.ones(1000), seed=0)
    assert [p["given"] for p in points] == pytest.approx([0.1, 0.3, 0.5], abs=0.04)


def test_a_target_missed_is_reported_as_missed() -> None:
    rows = [corpus_row(GSM8K, f"g{i}", 0.0, 1.0) for i in range(10)]  # no scorer can beat random
    result = evaluate_subset(Subset(MIXED, rows, {GSM8K: 10}), resamples=20, seed=0)
    verdict = target_verdict(result, "test")
    assert verdict["met"] is False and "NOT met" in verdict["text"] and "n=10" in verdict["text"]


# ---------------------------------------------------------------- export


def squad_file(tmp_path):
    data = {"data": [{"title": title, "paragraphs": [{"context": f"{title} is long.", "qas": [
        {"id": f"{title.lower()}-{q}", "question": f"Q{q} on {title}?", "answers": [{"text": f"{title} answer {q}"}]}
        for q in range(QUESTIONS_PER_ARTICLE)]}]} for title in ARTICLES]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(1, 7)))
    return path


def bench_record(dataset, item_id, *, edge_text="x", cloud_text="y", edge_correct=False, cloud_correct=True,
                 edge_f1=None, cloud_f1=None, error=None, arbiter="shadow", lp=0.123456789):
    runs = [{"backend": "EDGE", "purpose": "draft", "cost_usd": 1e-5, "total_s": 2.0},
            {"backend": "EDGE", "purpose": "sample", "cost_usd": 2e-5, "total_s": 3.0},
            {"backend": "EDGE", "purpose": "sample", "cost_usd": 2e-5, "total_s": 3.0},
            {"backend": "EDGE", "purpose": "verify", "cost_usd": 4e-5, "total_s": 1.5},
            {"backend": "CLOUD", "purpose": "answer", "cost_usd": 3e-4, "total_s": 9.0}]
    return {"dataset": dataset, "item_id": item_id, "mode": "POST_ARBITRATION", "error": error,
            "decision": {"arbiter": arbiter, "score": 0.25,
                         "features": {"lp_exp_mean": lp, "has_passage": 1.0, "span_short": 0.0,
                                      "has_consistency": 0.0, "consistency_agree": 0.0}},
            "edge_text": edge_text, "cloud_text": cloud_text, "edge_correct": edge_correct,
            "cloud_correct": cloud_correct, "edge_f1": edge_f1, "cloud_f1": cloud_f1, "runs": runs,
            "edge_tokens": 120, "cloud_tokens": 80}


def test_export_writes_one_sorted_line_per_usable_item_and_splits_squad_by_article(tmp_path) -> None:
    squad, gsm8k = squad_file(tmp_path), gsm8k_file(tmp_path)
    squad_ids = [f"{t.lower()}-{q}" for t in reversed(ARTICLES) for q in range(QUESTIONS_PER_ARTICLE)]
    # The Alps drafts are a span of their passage's sentence; the others answer "x".
    records = [bench_record(SQUAD_PASSAGE, item_id, edge_f1=0.5, cloud_f1=1.0,
                            edge_text="is long" if item_id.startswith("alps") else "x") for item_id in squad_ids]
    records += [bench_record(GSM8K, f"gsm8k-{i}", edge_text="3 + 4 = 8\n#### 8" if i == 6 else "x") for i in (6, 2, 4)]
    records += [bench_record(GSM8K, "gsm8k-1", error="DeadlineExceeded: late"),
                bench_record(GSM8K, "gsm8k-3", arbiter="cascade"),
                bench_record(GSM8K, "gsm8k-5", cloud_text=None),
                # the same item twice: the later record wins, as in the bench summary
                bench_record(GSM8K, "gsm8k-2", edge_correct=False), bench_record(GSM8K, "gsm8k-2", edge_correct=True)]
    results = tmp_path / "run"
    results.mkdir()
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn": ')
    out = tmp_path / "corpus" / "arbitration.jsonl"

    assert main(["export", "--results", str(results), "--out", str(out),
                 "--data", f"squad_passage:{squad}", "--data", f"gsm8k:{gsm8k}"]) == 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(squad_ids) + 3
    assert [(r["dataset"], r["item_id"]) for r in rows] == sorted((r["dataset"], r["item_id"]) for r in rows)
    assert {r["item_id"] for r in rows if r["dataset"] == GSM8K} == {"gsm8k-2", "gsm8k-4", "gsm8k-6"}
    gsm = {r["item_id"]: r for r in rows if r["dataset"] == GSM8K}
    assert (gsm["gsm8k-2"]["edge_quality"], gsm["gsm8k-2"]["cloud_quality"]) == (1.0, 1.0)
    assert gsm["gsm8k-2"]["group"] == "gsm8k-2"
    squad_rows = [r for r in rows if r["dataset"] == SQUAD_PASSAGE]
    assert {(r["edge_quality"], r["cloud_quality"]) for r in squad_rows} == {(0.5, 1.0)}
    splits_by_article = {}
    for row in squad_rows:
        splits_by_article.setdefault(row["group"], set()).add(row["split"])
    assert set(splits_by_article) == {f"squad:{title}" for title in ARTICLES}
    assert all(len(splits) == 1 for splits in splits_by_article.values())
    assert set().union(*splits_by_article.values()) == {"train", "test"}
    items = {i.item_id: i for i in load_dataset(f"squad_passage:{squad}") + load_dataset(f"gsm8k:{gsm8k}")}
    assert all(row["split"] == split_of(items[row["item_id"]]) for row in rows)
    # Each line carries the user turn the edge saw: what the learned model embeds, no data set needed.
    assert all(row["text"] == user_turn(items[row["item_id"]]) for row in rows)
    # A feature of the request and the draft's text alone is computed at export, not read from the record
    # (which predates it): the corpus gains it without relabelling.
    assert {r["item_id"] for r in squad_rows if r["features"]["span_in_focus"] == 1.0} == \
        {i for i in squad_ids if i.startswith("alps")}
    assert [(gsm[i]["features"]["arithmetic_checked"], gsm[i]["features"]["arithmetic_wrong"])
            for i in ("gsm8k-6", "gsm8k-4")] == [(1.0, 1.0), (0.0, 0.0)]
    first = rows[0]
    # The rule's score is drawn afresh from the features (not the decision's 0.25): a reading answer, not
    # in focus, not a short span, so a quarter of its geometric-mean token probability.
    assert first["features"]["lp_exp_mean"] == 0.123457 and first["rule_score"] == 0.0308642
    assert (first["edge_answer_usd"], first["sample_usd"], first["verify_usd"], first["cloud_usd"]) == \
        pytest.approx((1e-5, 4e-5, 4e-5, 3e-4))
    assert (first["scorer_usd"], first["edge_answer_s"], first["scorer_s"], first["cloud_s"]) == \
        pytest.approx((8e-5, 2.0, 7.5, 9.0))
    assert (first["edge_tokens"], first["cloud_tokens"]) == (120, 80)
    assert not (out.parent / "arbitration.jsonl.tmp").exists()


def test_export_refuses_an_item_the_data_set_does_not_hold(tmp_path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(bench_record(GSM8K, "gsm8k-99")) + "\n")
    items = [BenchItem(GSM8K, "gsm8k-1", "q", ("1",), None, "numeric")]
    with pytest.raises(ValueError, match="gsm8k-99"):
        export_corpus(results, tmp_path / "out.jsonl", load=lambda name: items)


def test_a_target_met_by_the_point_estimate_alone_says_the_interval_reaches_it() -> None:
    mixed = {"n": 12, "counts": {GSM8K: 6, SQUAD_PASSAGE: 6}, "reason": None, "scorers": [
        {"scorer": "oracle", "cpt_80": 0.1, "cpt_80_ci": [0.05, 0.2]},  # no strategy: never the best
        {"scorer": "verify", "cpt_80": 0.45, "cpt_80_ci": [0.3, 0.7]},
        {"scorer": "logprob", "cpt_80": 0.6, "cpt_80_ci": [0.5, 0.9]}]}
    verdict = target_verdict(mixed, "test")
    assert verdict["met"] is True and verdict["best"] == "verify"
    assert "point estimate only" in verdict["text"] and "[0.300, 0.700]" in verdict["text"]


def test_evaluate_scores_a_learned_model_beside_the_others(tmp_path) -> None:
    from router.core.arbiters.training import train_arbiter
    from tests.learned_arbiter_corpus import write_synthetic_corpus

    # The synthetic corpus (the edge is right when lp_exp_mean > 0.5), its items dealt to both tasks.
    synthetic = write_synthetic_corpus(tmp_path / "synthetic.jsonl", train=80, test=80)
    rows = [json.loads(line) for line in synthetic.read_text().splitlines()]
    for index, row in enumerate(rows):
        row.update(dataset=GSM8K if index % 2 else SQUAD_PASSAGE, sample_usd=2e-6, verify_usd=1e-6)
    corpus = tmp_path / "arbitration.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model = train_arbiter(corpus, tmp_path / "models")  # the features only: no encoder needed
    summary = evaluate_corpus(corpus, tmp_path / "out", split="test", resamples=50, seed=0, learned=model,
                              model_cache=tmp_path / "no-cache")
    scorers = {s["scorer"]: s for s in summary["subsets"][MIXED]["scorers"]}
    # It learned the signal: as good as the oracle, where random is 0.5.
    assert scorers["learned"]["apgr"] >= 0.95 * scorers["oracle"]["apgr"] > 0.6
    assert summary["learned_model"]["path"] == str(model)
    names = [s["scorer"] for s in summary["subsets"][MIXED]["scorers"]]
    assert "learned" in names and names[-2:] == ["oracle", "random"]
    assert "learned: `" in (tmp_path / "out" / "summary.md").read_text()


def test_evaluate_refuses_a_model_directory_that_holds_no_model(tmp_path) -> None:
    corpus = tmp_path / "arbitration.jsonl"
    corpus.write_text(json.dumps(corpus_row(GSM8K, "g-1", 0.0, 1.0, split="test")) + "\n")
    assert main(["evaluate", "--corpus", str(corpus), "--out", str(tmp_path / "out"),
                 "--learned", str(tmp_path / "absent")]) == 2


def test_evaluate_scores_the_pre_router_which_never_pays_the_edge_for_what_it_sends_on(tmp_path) -> None:
    from router.core.arbiters.corpus import read_corpus
    from router.core.routing.training import train_router
    from tests.learned_arbiter_corpus import write_synthetic_corpus

    # The edge's quality follows the kind of question (capitals right, sums wrong): the router can learn it.
    synthetic = write_synthetic_corpus(tmp_path / "synthetic.jsonl", train=120, test=120, signal_in_text=True)
    rows = [json.loads(line) for line in synthetic.read_text().splitlines()]
    for index, row in enumerate(rows):
        row.update(dataset=GSM8K if index % 2 else SQUAD_PASSAGE, sample_usd=2e-6, verify_usd=1e-6,
                   edge_answer_usd=1e-6, cloud_usd=1e-5)
    corpus = tmp_path / "arbitration.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    router = train_router(read_corpus(corpus), tmp_path / "routers", provenance={"path": str(corpus)})
    summary = evaluate_corpus(corpus, tmp_path / "out", split="test", resamples=50, seed=0, router=router,
                              model_cache=tmp_path / "no-cache")
    scorers = {s["scorer"]: s for s in summary["subsets"][MIXED]["scorers"]}
    assert scorers["pre:router"]["apgr"] >= 0.95 * scorers["oracle"]["apgr"]
    assert summary["router_target"]["scorer"] == "pre:router" and summary["router_target"]["met"] is True
    # Everything to the cloud: a cascade pays edge and cloud, the pre-router the cloud alone.
    assert scorers["pre:router"]["points"]["usd_per_1k"][-1] == pytest.approx(1000 * 1e-5)
    assert scorers["logprob"]["points"]["usd_per_1k"][-1] == pytest.approx(1000 * (1e-6 + 1e-5))
    assert "pre:router: `" in (tmp_path / "out" / "summary.md").read_text()


def test_evaluate_scores_the_probes_and_auto_from_the_stored_states(tmp_path) -> None:
    """States that carry the label: both probes rank as well as the oracle, AUTO's cloud band never pays the
    edge's answer, and each probe's target is judged."""
    from router.core.arbiters.corpus import read_corpus
    from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND
    from router.core.probes.states_file import HiddenStatesFile, row_key
    from router.core.probes.training import train_probe
    from tests.learned_arbiter_corpus import write_synthetic_corpus

    synthetic = write_synthetic_corpus(tmp_path / "synthetic.jsonl", train=120, test=120, signal_in_text=True)
    rows = [json.loads(line) for line in synthetic.read_text().splitlines()]
    rng = np.random.default_rng(0)
    states = HiddenStatesFile(edge_model="test-edge", edge_model_sha256="a" * 64, layer="final_norm")
    for index, row in enumerate(rows):
        row.update(dataset=GSM8K if index % 2 else SQUAD_PASSAGE, sample_usd=0.0, verify_usd=0.0,
                   edge_answer_usd=1e-6, cloud_usd=1e-5)
        wrong = float(row["cloud_quality"] > row["edge_quality"])
        state = rng.normal(size=16) + np.array([6.0 * wrong] + [0.0] * 15)
        states.add(row_key(row["dataset"], row["item_id"]), state, state)
    corpus = tmp_path / "arbitration.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    states.save(tmp_path / "states.npz")
    corpus_rows = read_corpus(corpus)
    draft, prefill = (train_probe(corpus_rows, states, tmp_path / kind, kind=kind, provenance={}, components=4)
                      for kind in (DRAFT_PROBE_KIND, PREFILL_PROBE_KIND))
    assert main(["evaluate", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--bootstrap", "30",
                 "--probe", str(draft), "--prefill-probe", str(prefill), "--states", str(tmp_path / "states.npz"),
                 "--auto-bands", "0.2,0.8"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    scorers = {s["scorer"]: s for s in summary["subsets"][MIXED]["scorers"]}
    for name in ("probe", "pre:probe", "auto"):
        assert scorers[name]["apgr"] >= 0.9 * scorers["oracle"]["apgr"], name
    # Everything to the cloud: the cascade pays edge and cloud; AUTO's cloud band the cloud alone.
    assert scorers["probe"]["points"]["usd_per_1k"][-1] == pytest.approx(1000 * (1e-6 + 1e-5))
    assert scorers["pre:probe"]["points"]["usd_per_1k"][-1] == pytest.approx(1000 * 1e-5)
    assert 1000 * 1e-5 < scorers["auto"]["points"]["usd_per_1k"][-1] < 1000 * (1e-6 + 1e-5)
    verdicts = {v["claim"].split()[0]: v for v in summary["probe_targets"]}
    assert set(verdicts) == {"probe", "pre:probe", "auto"} and all(v["met"] is not None for v in verdicts.values())
    assert summary["probes"]["draft"]["hidden_state"]["edge_model"] == "test-edge"
    # The probes need the states, and AUTO both probes.
    assert main(["evaluate", "--corpus", str(corpus), "--out", str(tmp_path / "o2"), "--probe", str(draft)]) == 2
    assert main(["evaluate", "--corpus", str(corpus), "--out", str(tmp_path / "o3"), "--probe", str(draft),
                 "--states", str(tmp_path / "states.npz"), "--auto-bands", "0.2,0.8"]) == 2
