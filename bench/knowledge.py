"""How fast and how well does the knowledge base answer what callers say (issue 18)?

Loads the labelled evaluation articles (bench/data/kb_eval.yaml) plus generated filler
articles (bench/_knowledge_articles.py) up to `--articles` (100,000), indexes them through
the real `KnowledgeIndex` (`make_index(...).rebuild()`) on a fresh SQLite file and a fresh
PostgreSQL database of its own, then measures, `--repeats` times:

- search: each evaluation query once (limit 10), latency p50/p95;
- suggest: the console's live suggestions — every prefix of each query as its words arrive
  (every 2, 3 or 4 characters, in turn, then the whole), limit 5, latency p95;
- `search_cpu_p95_ms` / `suggest_cpu_p95_ms`: the same searches' CPU time in this thread
  (Python, and on SQLite the database engine too; not PostgreSQL's server), which a loaded
  machine does not inflate as it does wall-clock latency;
- relevance (the same every repeat: the scoring is deterministic): `kb_top1_hit_rate`,
  `kb_top3_hit_rate` over the queries whose labelled article is in service, the same for
  the held-out queries (bench/data/kb_eval_holdout.yaml, written before the last tuning and
  never tuned on: `kb_top3_hit_rate_holdout`; they are searched and timed with the others,
  not suggested), and
  `expired_shown`: hits, in any search or suggestion, of an article that was expired or
  retired (must be 0).

A baseline of 1,000 articles is measured in the same run, interleaved repeat by repeat,
and `p95_ratio_vs_1000` compares the two. Per backend: the median over the repeats and the
worst repeat (never the best); the top-level keys are the worse backend's. Both backends
rank with the same code from the same counts (hotline/knowledge/search_base.py): with both
measured, `rankings_across_backends` counts the queries whose articles or order differ
between them (0 expected).

    python bench/knowledge.py --json [--articles N] [--db sqlite|postgres] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from accounts.models import Role, User
from bench._common import (
    machine,
    percentile,
    postgres_database,
    postgres_version,
    say,
    sqlite_database,
    verdicts,
)
from bench._knowledge_articles import Article, EvalSet, Query, as_rows, filler, load_eval
from core.db import make_engine, make_session_factory
from dispatch.models import Unit, UnitLevel
from hotline.knowledge.models import ArticleStatus, KnowledgeArticle, KnowledgeArticleVersion
from hotline.knowledge.search import KnowledgeIndex, make_index

TARGETS = {
    "search_p95_ms": ("<=", 50.0),
    "suggest_p95_ms": ("<=", 50.0),
    "kb_top3_hit_rate": (">=", 0.9),
}
BASELINE_ARTICLES = 1_000
SEARCH_LIMIT = 10
SUGGEST_LIMIT = 5
PREFIX_STEPS = (2, 3, 4)
CHUNK = 2_000


# ---------------------------------------------------------------- the corpus in a database


@dataclass
class Corpus:
    """An indexed database: its engine, and the ids of the evaluation articles."""

    engine: Engine
    ids: dict[str, int]  # evaluation key → article id
    out_of_service: set[int]  # expired or retired, filler included
    articles: int
    build_s: float


def corpus_articles(evaluation: EvalSet, n: int) -> list[Article]:
    return evaluation.articles + filler(max(0, n - len(evaluation.articles)))


def load(engine: Engine, articles: Sequence[Article], now: datetime) -> Corpus:
    """Insert the articles as the service leaves them (head, version 1, published or
    retired), then index them all through the real index; `build_s` is the indexing."""
    session = make_session_factory(engine)()
    try:
        unit = Unit.model_validate({"code": "BENCH", "name": "知识库测评", "level": UnitLevel.city})
        user = User.model_validate(
            {
                "username": "kb.bench",
                "display_name": "kb bench",
                "role": Role.supervisor,
                "token_hash": uuid.uuid4().hex,
                "created_at": now,
            }
        )
        session.add(unit)
        session.flush()
        user.unit_id = unit.id
        session.add(user)
        session.flush()
        ids: dict[str, int] = {}
        out: set[int] = set()
        heads, versions = [], []
        for article_id, article in enumerate(articles, start=1):
            content = as_rows(article) | validity(article, now)
            retired = article.state == "retired"
            heads.append(
                content
                | {
                    "id": article_id,
                    "owner_unit_id": unit.id,
                    "number": f"KB{article_id:06d}",
                    "status": ArticleStatus.retired if retired else ArticleStatus.published,
                    "version": 1,
                    "published_version": None if retired else 1,
                    "published_at": None if retired else now - timedelta(days=400),
                    "published_by": None if retired else user.id,
                    "created_at": now - timedelta(days=400),
                    "created_by": user.id,
                    "updated_at": now - timedelta(days=400),
                    "updated_by": user.id,
                }
            )
            versions.append(
                content
                | {
                    "owner_unit_id": unit.id,
                    "article_id": article_id,
                    "version": 1,
                    "saved_at": now - timedelta(days=400),
                    "saved_by": user.id,
                    "changed": ["title", "body"],
                }
            )
            if not article.key.startswith("filler-"):
                ids[article.key] = article_id
            if article.state != "published":
                out.add(article_id)
        for start in range(0, len(heads), CHUNK):
            session.execute(insert(KnowledgeArticle), heads[start : start + CHUNK])
            session.execute(insert(KnowledgeArticleVersion), versions[start : start + CHUNK])
        session.commit()
        started = time.perf_counter()
        indexed = make_index(session).rebuild()
        session.commit()
        build_s = time.perf_counter() - started
    finally:
        session.close()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return Corpus(engine, ids, out, indexed, build_s)


def validity(article: Article, now: datetime) -> dict[str, Any]:
    if article.state == "expired":
        return {"valid_from": now - timedelta(days=730), "valid_until": now - timedelta(days=365)}
    return {"valid_from": now - timedelta(days=730), "valid_until": None}


@contextmanager
def database(db: str) -> Iterator[Engine]:
    with sqlite_database() if db == "sqlite" else postgres_database("hotline_kb_bench") as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


# ---------------------------------------------------------------- measuring


def prefixes(text: str) -> list[str]:
    """What the console has of the transcript as the words arrive: every 2, 3 or 4 more
    characters in turn, then the whole."""
    cuts, at, step = [], 0, 0
    while True:
        at += PREFIX_STEPS[step % len(PREFIX_STEPS)]
        step += 1
        if at >= len(text):
            break
        cuts.append(text[:at])
    return [*cuts, text]


@dataclass
class Pass:
    """One repeat's searches on one corpus."""

    search_s: list[float] = field(default_factory=list)
    suggest_s: list[float] = field(default_factory=list)
    # this thread's CPU time: Python and SQLite's engine, not PostgreSQL's server
    search_cpu_s: list[float] = field(default_factory=list)
    suggest_cpu_s: list[float] = field(default_factory=list)
    ranked: dict[int, list[int]] = field(default_factory=dict)  # query index → article ids
    ranked_holdout: dict[int, list[int]] = field(default_factory=dict)  # the same, held out
    out_of_service_shown: int = 0


def run_pass(
    index: KnowledgeIndex, evaluation: EvalSet, corpus: Corpus, now: datetime, *, suggest: bool
) -> Pass:
    result = Pass()

    def timed_search(text: str, limit: int) -> list[int]:
        started, cpu = time.perf_counter(), time.thread_time()
        hits = index.search(text, now=now, limit=limit)
        elapsed, used = time.perf_counter() - started, time.thread_time() - cpu
        found = [h.article_id for h in hits]
        result.out_of_service_shown += sum(1 for a in found if a in corpus.out_of_service)
        suggesting = limit == SUGGEST_LIMIT
        (result.suggest_s if suggesting else result.search_s).append(elapsed)
        (result.suggest_cpu_s if suggesting else result.search_cpu_s).append(used)
        return found

    for i, query in enumerate(evaluation.queries):
        result.ranked[i] = timed_search(query.text, SEARCH_LIMIT)
    for i, query in enumerate(evaluation.holdout):
        result.ranked_holdout[i] = timed_search(query.text, SEARCH_LIMIT)
    if suggest:
        for query in evaluation.queries:
            for prefix in prefixes(query.text):
                timed_search(prefix, SUGGEST_LIMIT)
    return result


def relevance(
    evaluation: EvalSet,
    ids: dict[str, int],
    ranked: dict[int, list[int]],
    queries: Sequence[Query] | None = None,
) -> dict[str, Any]:
    """Hit rates over the queries (the tuned set unless given) whose labelled article is in
    service; for the others, how often their (expired or retired) article came back."""
    queries = evaluation.queries if queries is None else queries
    top1 = top3 = judged = labelled_out_shown = 0
    misses = []
    for i, query in enumerate(queries):
        found = ranked[i]
        wanted = ids[query.article]
        if not evaluation.in_service(query.article):
            labelled_out_shown += wanted in found
            continue
        judged += 1
        top1 += found[:1] == [wanted]
        top3 += wanted in found[:3]
        if wanted not in found[:3]:
            rank = found.index(wanted) + 1 if wanted in found else None
            misses.append({"query": query.text, "article": query.article, "rank": rank})
    return {
        "kb_top1_hit_rate": round(top1 / judged, 4) if judged else None,
        "kb_top3_hit_rate": round(top3 / judged, 4) if judged else None,
        "queries_judged": judged,
        "queries_out_of_service": len(queries) - judged,
        "out_of_service_labels_shown": labelled_out_shown,
        "misses": misses,
    }


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile([v * 1000 for v in values], q), 3)


def pass_figures(run: Pass) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "search_p50_ms": round(statistics.median(run.search_s) * 1000, 3),
        "search_p95_ms": _ms(run.search_s, 95),
        "search_max_ms": _ms(run.search_s, 100),
        "search_cpu_p95_ms": _ms(run.search_cpu_s, 95),
        "searches": len(run.search_s),
    }
    if run.suggest_s:
        figures |= {
            "suggest_p50_ms": round(statistics.median(run.suggest_s) * 1000, 3),
            "suggest_p95_ms": _ms(run.suggest_s, 95),
            "suggest_cpu_p95_ms": _ms(run.suggest_cpu_s, 95),
            "suggestions": len(run.suggest_s),
        }
    return figures


def combine(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median over the repeats and the worst repeat, for every latency figure."""
    out: dict[str, Any] = {}
    for key in passes[0]:
        if key.endswith("_ms"):
            values = [p[key] for p in passes]
            out[key] = round(statistics.median(values), 3)
            out[f"{key}_worst"] = max(values)
    return out


def measure_backend(
    db: str,
    evaluation: EvalSet,
    *,
    articles: int,
    repeats: int,
    now: datetime,
    baseline: int = BASELINE_ARTICLES,
) -> dict[str, Any]:
    with ExitStack() as stack:
        corpora: dict[str, Corpus] = {}
        for name, n in (("baseline", baseline), ("full", articles)):
            engine = stack.enter_context(database(db))
            say(f"{db}: loading and indexing {n:,} articles")
            corpora[name] = load(engine, corpus_articles(evaluation, n), now)
            say(f"{db}: {corpora[name].articles:,} indexed in {corpora[name].build_s:.1f} s")
        indexes = {name: make_index(c.engine) for name, c in corpora.items()}
        for name, index in indexes.items():  # warm: jieba's dictionary, connections, caches
            run_pass(index, evaluation, corpora[name], now, suggest=False)
        runs: dict[str, list[Pass]] = {"baseline": [], "full": []}
        for repeat in range(repeats):
            for name in ("baseline", "full"):
                say(f"{db}: repeat {repeat + 1}/{repeats} on {corpora[name].articles:,} articles")
                runs[name].append(
                    run_pass(indexes[name], evaluation, corpora[name], now, suggest=True)
                )
        result: dict[str, Any] = {}
        if db == "postgres":
            result["postgres_version"] = postgres_version(corpora["full"].engine)
        for name, corpus in corpora.items():
            per_pass = [pass_figures(r) for r in runs[name]]
            first = runs[name][0]
            quality = relevance(evaluation, corpus.ids, first.ranked)
            held_out = relevance(evaluation, corpus.ids, first.ranked_holdout, evaluation.holdout)
            stable = all(
                (r.ranked, r.ranked_holdout) == (first.ranked, first.ranked_holdout)
                for r in runs[name]
            )
            result[name] = {
                "articles_in_service": corpus.articles,
                "articles_out_of_service": len(corpus.out_of_service),
                "index_build_s": round(corpus.build_s, 2),
                **combine(per_pass),
                **{k: v for k, v in quality.items() if k != "misses"},
                "kb_top1_hit_rate_holdout": held_out["kb_top1_hit_rate"],
                "kb_top3_hit_rate_holdout": held_out["kb_top3_hit_rate"],
                "queries_judged_holdout": held_out["queries_judged"],
                "out_of_service_labels_shown_holdout": held_out["out_of_service_labels_shown"],
                "expired_shown": sum(r.out_of_service_shown for r in runs[name]),
                "rankings_same_every_repeat": stable,
                # every query's articles in order, by evaluation key (filler by number):
                # compared across the backends by `report`, then dropped
                "_rankings": _by_key(corpus, first),
                "repeats": per_pass,
                "misses": quality["misses"],
                "misses_holdout": held_out["misses"],
            }
        full, base = result["full"], result["baseline"]
        for key in ("search_p95_ms", "suggest_p95_ms"):
            full[f"{key}_ratio_vs_{baseline}"] = (
                round(full[key] / base[key], 2) if base[key] else None
            )
        return result


def _by_key(corpus: Corpus, run: Pass) -> list[list[str]]:
    keys = {article_id: key for key, article_id in corpus.ids.items()}
    return [
        [keys.get(a, f"#{a}") for a in ranked]
        for ranked in (*run.ranked.values(), *run.ranked_holdout.values())
    ]


def same_rankings(backends: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Whether every backend returned the same articles in the same order for every query
    (the articles are loaded in the same order, so ids match), per corpus; pops the
    rankings kept for it."""
    if len(backends) < 2:
        for figs in backends.values():
            for name in ("baseline", "full"):
                figs[name].pop("_rankings", None)
        return None
    out: dict[str, Any] = {}
    for name in ("baseline", "full"):
        rankings = [figs[name].pop("_rankings") for figs in backends.values()]
        differing = sum(
            1 for per_query in zip(*rankings, strict=True) if len({tuple(r) for r in per_query}) > 1
        )
        out[name] = {"queries": len(rankings[0]), "differing": differing}
    return out


def figures(backends: dict[str, dict[str, Any]], *, articles: int, repeats: int) -> dict[str, Any]:
    """The top-level keys: the worse backend's figure on the full corpus."""
    fulls = [b["full"] for b in backends.values()]
    out: dict[str, Any] = {
        "bench": "knowledge",
        "articles": articles,
        "repeats": repeats,
        "search_p95_ms": max(f["search_p95_ms"] for f in fulls),
        "search_p95_ms_worst": max(f["search_p95_ms_worst"] for f in fulls),
        "suggest_p95_ms": max(f["suggest_p95_ms"] for f in fulls),
        "suggest_p95_ms_worst": max(f["suggest_p95_ms_worst"] for f in fulls),
        "kb_top3_hit_rate": min(f["kb_top3_hit_rate"] for f in fulls),
        "kb_top1_hit_rate": min(f["kb_top1_hit_rate"] for f in fulls),
        "kb_top3_hit_rate_holdout": _lowest(f["kb_top3_hit_rate_holdout"] for f in fulls),
        "expired_shown": sum(
            b[name]["expired_shown"] for b in backends.values() for name in ("baseline", "full")
        ),
    }
    out["targets"] = verdicts(out, TARGETS)
    return out | {"backends": backends, "machine": machine()}


def _lowest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def report(
    *,
    articles: int,
    dbs: Sequence[str],
    repeats: int,
    evaluation: EvalSet | None = None,
    now: datetime | None = None,
    baseline: int = BASELINE_ARTICLES,
) -> dict[str, Any]:
    evaluation = evaluation or load_eval()
    now = now or datetime.now(UTC)
    backends = {
        db: measure_backend(
            db, evaluation, articles=articles, repeats=repeats, now=now, baseline=baseline
        )
        for db in dbs
    }
    same = same_rankings(backends)
    out = figures(backends, articles=articles, repeats=repeats)
    if same is not None:
        out["rankings_across_backends"] = same
    out["evaluation"] = {
        "articles": len(evaluation.articles),
        "queries": len(evaluation.queries),
        "queries_holdout": len(evaluation.holdout),
    }
    return out


def _readable(result: dict[str, Any], emit: Callable[[str], None]) -> None:
    for key, verdict in result["targets"].items():
        emit(f"{key:>20}: {verdict['value']} (target {verdict['target']}, met: {verdict['met']})")
    for db, figs in result["backends"].items():
        for name in ("baseline", "full"):
            f = figs[name]
            emit(
                f"{db:>8} {name:>8} {f['articles_in_service']:>7,} articles: search p50 "
                f"{f['search_p50_ms']} p95 {f['search_p95_ms']} (worst {f['search_p95_ms_worst']})"
                f" ms, suggest p95 {f['suggest_p95_ms']} (worst {f['suggest_p95_ms_worst']}) ms,"
                f" top1 {f['kb_top1_hit_rate']} top3 {f['kb_top3_hit_rate']}"
                f" (held out {f['kb_top3_hit_rate_holdout']}),"
                f" build {f['index_build_s']} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = max(1, min(args.repeats, 10))
    result = report(articles=args.articles, dbs=args.db or ["sqlite", "postgres"], repeats=repeats)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _readable(result, print)


if __name__ == "__main__":
    main()
