"""bench/knowledge.py's own functions on a small knowledge base, on both databases: the
figures' keys are there, the hit rates are counted from the labelled set (a wrong label
lowers them), and an expired or retired article never comes back. No timing is asserted:
the machine is shared."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench._knowledge_articles import EvalSet, load_eval  # noqa: E402
from bench.knowledge import (  # noqa: E402
    TARGETS,
    corpus_articles,
    database,
    figures,
    load,
    measure_backend,
    prefixes,
    relevance,
    run_pass,
)
from hotline.knowledge.search import make_index  # noqa: E402

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
EVAL = load_eval()


@pytest.fixture(scope="module")
def corpus(backend):
    with database(backend) as engine:
        yield load(engine, corpus_articles(EVAL, 1_000), NOW)


@pytest.fixture(scope="module")
def ranked(corpus):
    return run_pass(make_index(corpus.engine), EVAL, corpus, NOW, suggest=False)


def test_given_the_labelled_set_then_it_is_big_enough_and_mostly_in_service():
    in_service = [q for q in EVAL.queries if EVAL.in_service(q.article)]
    assert len(EVAL.articles) >= 40 and len(in_service) >= 100
    assert len(EVAL.queries) > len(in_service)  # some ask for expired or retired articles
    titles = {a.title for a in EVAL.articles}
    assert not any(q.text in titles for q in EVAL.queries)


def test_given_the_held_out_set_then_it_is_new_queries_for_the_same_articles():
    in_service = [q for q in EVAL.holdout if EVAL.in_service(q.article)]
    assert len(in_service) >= 60
    assert not {q.text for q in EVAL.holdout} & {q.text for q in EVAL.queries}
    assert {q.article for q in EVAL.holdout} <= {a.key for a in EVAL.articles}


def test_given_a_held_out_query_also_in_the_tuned_set_then_loading_refuses(tmp_path):
    from bench._knowledge_articles import EVAL_PATH

    copied = tmp_path / "holdout.yaml"
    first = EVAL.queries[0]
    copied.write_text(f"queries:\n  - {{q: {first.text}, article: {first.article}}}\n")
    with pytest.raises(ValueError, match="also in the tuned set"):
        load_eval(EVAL_PATH, copied)


def test_given_the_held_out_searches_then_their_hit_rate_is_counted_apart(corpus, ranked):
    quality = relevance(EVAL, corpus.ids, ranked.ranked_holdout, EVAL.holdout)
    judged = [(i, q) for i, q in enumerate(EVAL.holdout) if EVAL.in_service(q.article)]
    top3 = sum(corpus.ids[q.article] in ranked.ranked_holdout[i][:3] for i, q in judged)
    assert len(ranked.ranked_holdout) == len(EVAL.holdout)
    assert quality["queries_judged"] == len(judged)
    assert quality["kb_top3_hit_rate"] == round(top3 / len(judged), 4)
    assert quality["out_of_service_labels_shown"] == 0


def test_given_a_transcript_then_suggestions_search_each_prefix_as_words_arrive():
    assert prefixes("暖气一点都不热屋里才十五度") == [
        "暖气",
        "暖气一点都",
        "暖气一点都不热屋里",
        "暖气一点都不热屋里才十",
        "暖气一点都不热屋里才十五度",
    ]


def test_given_the_searches_then_hit_rates_are_counted_from_the_labels(corpus, ranked):
    quality = relevance(EVAL, corpus.ids, ranked.ranked)
    judged = [(i, q) for i, q in enumerate(EVAL.queries) if EVAL.in_service(q.article)]
    top3 = sum(corpus.ids[q.article] in ranked.ranked[i][:3] for i, q in judged)
    assert quality["queries_judged"] == len(judged)
    assert quality["kb_top3_hit_rate"] == round(top3 / len(judged), 4)
    assert quality["kb_top1_hit_rate"] <= quality["kb_top3_hit_rate"]

    # A query that finds its article, labelled with another one, is a miss.
    i, hit = next((i, q) for i, q in judged if ranked.ranked[i][:1] == [corpus.ids[q.article]])
    other = next(
        a.key
        for a in EVAL.articles
        if a.state == "published" and corpus.ids[a.key] not in ranked.ranked[i][:3]
    )
    queries = list(EVAL.queries)
    queries[i] = dataclasses.replace(hit, article=other)
    mislabelled = relevance(EvalSet(EVAL.articles, queries), corpus.ids, ranked.ranked)

    # one hit fewer, counted from the hits (not from the rounded rates)
    top1 = sum(ranked.ranked[i][:1] == [corpus.ids[q.article]] for i, q in judged)
    assert mislabelled["kb_top1_hit_rate"] == round((top1 - 1) / len(judged), 4)
    assert mislabelled["kb_top3_hit_rate"] == round((top3 - 1) / len(judged), 4)
    assert any(m["query"] == hit.text for m in mislabelled["misses"])


def test_given_expired_and_retired_articles_then_they_never_show(corpus, ranked):
    assert corpus.out_of_service  # filler and labelled ones both
    assert ranked.out_of_service_shown == 0
    assert relevance(EVAL, corpus.ids, ranked.ranked)["out_of_service_labels_shown"] == 0
    index = make_index(corpus.engine)
    for article in EVAL.articles:
        if article.state != "published":
            # even asked for by its own title
            hits = index.search(article.title, now=NOW, limit=50)
            assert corpus.ids[article.key] not in {h.article_id for h in hits}


def test_given_a_tiny_run_then_the_figures_have_their_keys(backend):
    small = EvalSet(EVAL.articles, EVAL.queries[:8] + EVAL.queries[-2:])
    result = measure_backend(
        backend, small, articles=120, repeats=1, now=NOW, baseline=len(EVAL.articles)
    )
    full = result["full"]
    assert {
        "search_p50_ms",
        "search_p95_ms",
        "search_p95_ms_worst",
        "suggest_p95_ms",
        "suggest_p95_ms_worst",
        "index_build_s",
        "kb_top1_hit_rate",
        "kb_top3_hit_rate",
        "expired_shown",
        "search_p95_ms_ratio_vs_52",
        "kb_top3_hit_rate_holdout",
    } <= set(full)
    assert full["expired_shown"] == 0 and full["queries_out_of_service"] == 2
    out = figures({backend: result}, articles=120, repeats=1)
    assert set(TARGETS) <= set(out) and set(out["targets"]) == set(TARGETS)
    assert out["kb_top3_hit_rate_holdout"] is None  # this run had no held-out queries
