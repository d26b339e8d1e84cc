"""How long does routing one ticket take with a big rule book?

Builds `n_rules` synthetic keyword rules plus the default Chinese pack, then times
CompiledRules.match() on 300-character Chinese texts against a naive evaluator that scans
every rule with `in`, measured in the same run. Target: match() p50 <= 0.5 ms at 1,000 rules.

    python bench/rule_match.py            # readable figures
    python bench/rule_match.py --json     # one JSON object (rule_match_ms_p50, ...)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import unicodedata
from datetime import time
from time import perf_counter, perf_counter_ns
from typing import Any

from dispatch.rule_matching import CompiledRules, TicketFacts, normalise
from dispatch.rule_specs import RuleSpec, load_pack, validate_rule
from dispatch.rulebook import DEFAULT_RULES_PATH

SENTENCES = [
    "我们公司老板拖欠了三个月工资，一直不发，找了好几次都说没钱。",
    "楼下工地晚上十一点还在施工，噪音太大，孩子第二天还要上学，根本睡不着。",
    "小区已经停水两天了，物业也不管，老人和孩子生活非常不方便。",
    "学校门口有人占道经营乱摆摊，上下学时间特别拥堵，存在安全隐患。",
    "楼下饭店油烟太大，熏得窗户都不敢开，希望有关部门尽快处理。",
    "十字路口的交通信号灯坏了，早晚高峰车辆乱成一团。",
    "在超市买到过期食品，要求商家赔偿，商家态度很差拒不处理。",
    "暖气不热，家里只有十五度，打热力公司电话一直没人接。",
]
DISTRICTS = ["榆阳区", "横山区", "神木市"]


def _pool() -> list[str]:
    """Characters of real 12345 vocabulary, so synthetic keywords hit as often as real ones."""
    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8") + "".join(SENTENCES)
    return sorted({c for c in text if "\u4e00" <= c <= "\u9fff"})


def synthetic_rules(n: int, rng: random.Random, pool: list[str]) -> list[RuleSpec]:
    def word() -> str:
        return "".join(rng.choices(pool, k=rng.randint(2, 4)))

    specs = []
    for i in range(n):
        conditions: dict[str, Any] = {"text_any": [word() for _ in range(rng.randint(5, 10))]}
        if rng.random() < 0.2:
            conditions["text_all"] = [word()]
        if rng.random() < 0.1:
            conditions["districts"] = [rng.choice(DISTRICTS)]
        specs.append(
            validate_rule(
                {
                    "name": f"synthetic-{i:05d}",
                    "priority": rng.randint(0, 999),
                    "conditions": conditions,
                    "actions": {"lead_unit": f"SYN_{i % 50}"},
                }
            )
        )
    return specs


def texts(count: int, length: int, rng: random.Random, pool: list[str]) -> list[str]:
    """Half read like real requests; half are filler that few rules, if any, route, so the
    naive scan has to walk most of the rule book as it does for the manual queue."""
    made = []
    for i in range(count):
        text = "".join(rng.sample(SENTENCES, k=3)) if i % 2 == 0 else ""
        text += "".join(rng.choices(pool, k=max(0, length - len(text))))
        made.append(text[:length])
    return made


class Naive:
    """The obvious evaluator: every enabled rule in priority order, every keyword by `in`."""

    def __init__(self, specs: list[RuleSpec]) -> None:
        ordered = sorted((s for s in specs if s.enabled), key=lambda s: (s.priority, s.name))
        self.rules = [
            (
                s,
                [normalise(k) for k in s.conditions.text_any],
                [normalise(k) for k in s.conditions.text_all],
                [normalise(k) for k in s.conditions.text_none],
                [re.compile(p, re.IGNORECASE) for p in s.conditions.regex],
            )
            for s in ordered
        ]

    def match(self, facts: TicketFacts) -> RuleSpec | None:
        nfkc = unicodedata.normalize("NFKC", facts.text)
        text = nfkc.lower()
        for spec, any_, all_, none, patterns in self.rules:
            c = spec.conditions
            if any_ and not any(k in text for k in any_):
                continue
            if not all(k in text for k in all_) or any(k in text for k in none):
                continue
            if c.request_types and facts.request_type not in c.request_types:
                continue
            if c.urgencies and facts.urgency not in c.urgencies:
                continue
            if c.districts and facts.district not in c.districts:
                continue
            if c.channels and facts.channel not in c.channels:
                continue
            if c.time_of_day and (
                facts.local_time is None or not c.time_of_day.contains(facts.local_time)
            ):
                continue
            if patterns and not any(p.search(nfkc) for p in patterns):
                continue
            return spec
        return None


def _timed(fn: Any, facts: list[TicketFacts], rounds: int) -> list[float]:
    samples = []
    for i in range(rounds):
        one = facts[i % len(facts)]
        start = perf_counter_ns()
        fn(one)
        samples.append((perf_counter_ns() - start) / 1e6)
    return samples


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1]


def measure(
    n_rules: int = 1000, text_len: int = 300, rounds: int = 3000, seed: int = 12345
) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = _pool()
    specs = synthetic_rules(n_rules, rng, pool) + load_pack(
        DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml"
    )
    facts = [
        TicketFacts(
            text=t, district=rng.choice(DISTRICTS), local_time=rng.choice([time(10), time(23, 30)])
        )
        for t in texts(50, text_len, rng, pool)
    ]

    start = perf_counter()
    compiled = CompiledRules.build(specs)
    build_ms = (perf_counter() - start) * 1e3
    naive = Naive(specs)
    for one in facts:  # both must route every text the same way, or the timing means nothing
        found, expected = compiled.match(one), naive.match(one)
        assert (found.rule if found else None) == expected, one.text

    _timed(compiled.match, facts, rounds // 10)  # warm-up
    fast = _timed(compiled.match, facts, rounds)
    slow = _timed(naive.match, facts, rounds)
    p50, naive_p50 = statistics.median(fast), statistics.median(slow)
    return {
        "rules": len(specs),
        "text_len": text_len,
        "build_ms": round(build_ms, 1),
        "rule_match_ms_p50": round(p50, 4),
        "rule_match_ms_p95": round(_p(fast, 95), 4),
        "naive_ms_p50": round(naive_p50, 4),
        "naive_ms_p95": round(_p(slow, 95), 4),
        "speedup_vs_naive": round(naive_p50 / p50, 1),
        "texts_routed": sum(compiled.match(f) is not None for f in facts) / len(facts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000, help="synthetic rules to add")
    parser.add_argument("--text-len", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(n_rules=args.rules, text_len=args.text_len)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['rules']} rules, {result['text_len']}-char texts "
        f"(compiled in {result['build_ms']} ms)"
    )
    print(
        f"match():     p50 {result['rule_match_ms_p50']:.4f} ms   "
        f"p95 {result['rule_match_ms_p95']:.4f} ms"
    )
    print(f"naive scan:  p50 {result['naive_ms_p50']:.4f} ms   p95 {result['naive_ms_p95']:.4f} ms")
    print(
        f"speed-up {result['speedup_vs_naive']}x; "
        f"{result['texts_routed']:.0%} of texts routed by a rule"
    )


if __name__ == "__main__":
    main()
