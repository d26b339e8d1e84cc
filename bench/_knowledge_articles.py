"""The articles bench/knowledge.py searches: the labelled evaluation set
(bench/data/kb_eval.yaml) and generated filler — notices, guides and lists worded as a city's
departments publish them, from templates and word lists, so the index holds the same
vocabulary the evaluation queries use, in other combinations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EVAL_PATH = Path(__file__).parent / "data" / "kb_eval.yaml"
# Queries written before the last tuning and never used for it (the synonyms were shaped on
# kb_eval.yaml's): what the search does with callers it has not seen.
HOLDOUT_PATH = Path(__file__).parent / "data" / "kb_eval_holdout.yaml"
STATES = ("published", "expired", "retired")


@dataclass(frozen=True)
class Article:
    key: str  # the evaluation label, or filler-<n>
    title: str
    body: str
    category_code: str
    policy_source: str | None = None
    document_number: str | None = None
    region: str | None = None
    state: str = "published"  # published | expired | retired


@dataclass(frozen=True)
class Query:
    text: str
    article: str  # the key of the article that answers it


@dataclass(frozen=True)
class EvalSet:
    articles: list[Article]
    queries: list[Query]
    holdout: list[Query] = field(default_factory=list)  # same articles, never tuned on

    def in_service(self, key: str) -> bool:
        return next(a for a in self.articles if a.key == key).state == "published"


def load_eval(path: Path = EVAL_PATH, holdout: Path | None = HOLDOUT_PATH) -> EvalSet:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    articles = [Article(**{k: str(v) for k, v in a.items()}) for a in data["articles"]]
    keys = {a.key for a in articles}
    if len(keys) != len(articles):
        raise ValueError("duplicate article keys in the evaluation set")
    if any(a.state not in STATES for a in articles):
        raise ValueError(f"an article's state must be one of {STATES}")
    queries = _queries(data["queries"], keys)
    held_out: list[Query] = []
    if holdout is not None:
        held_out = _queries(yaml.safe_load(holdout.read_text(encoding="utf-8"))["queries"], keys)
        tuned = {q.text for q in queries}
        if any(q.text in tuned for q in held_out):
            raise ValueError("a held-out query is also in the tuned set")
    return EvalSet(articles, queries, held_out)


def _queries(raw: list[dict[str, str]], keys: set[str]) -> list[Query]:
    queries = [Query(q["q"], q["article"]) for q in raw]
    unknown = {q.article for q in queries} - keys
    if unknown:
        raise ValueError(f"queries labelled with unknown articles: {sorted(unknown)}")
    return queries


# ---------------------------------------------------------------- filler

_DISTRICTS = [
    "榆阳区",
    "横山区",
    "神木市",
    "府谷县",
    "靖边县",
    "定边县",
    "米脂县",
    "佳县",
    "绥德县",
]
_STREETS = [
    "鼓楼街道", "青山路街道", "上郡路街道", "城关街道", "夏州街道", "麟州街道", "滨河街道",
    "新明楼街道", "驼峰路街道", "航宇路街道", "崇文路街道", "沙河路街道", "长城路街道",
]  # fmt: skip
_ESTATES = [
    "阳光花园", "金域华府", "世纪家园", "锦绣苑", "翠湖小区", "沙河新村", "长城花园",
    "文化北路家属院", "恒大名都", "人民新村", "东方丽景", "西沙小区", "南门口小区",
    "学府佳苑", "碧水蓝天",
]  # fmt: skip
_ROADS = ["人民路", "长城北路", "肤施路", "文化路", "榆溪大道", "沙河路", "建业大道", "明珠大道"]
_UNITS = [
    ("市自来水公司", "0201"), ("国网供电公司", "0202"), ("市燃气公司", "0203"),
    ("市热力公司", "0204"), ("市住房和城乡建设局", "0301"), ("市住房公积金管理中心", "0303"),
    ("市不动产登记中心", "0302"), ("市生态环境局", "0501"), ("市城市管理局", "0505"),
    ("市人力资源和社会保障局", "0601"), ("市医疗保障局", "0602"), ("市民政局", "0604"),
    ("市残疾人联合会", "0605"), ("市公安局", "0701"), ("市教育局", "0801"),
    ("市交通运输局", "0901"), ("市公安局交通管理支队", "0902"), ("市市场监督管理局", "1101"),
    ("市卫生健康委员会", "1201"), ("市园林绿化中心", "0507"),
]  # fmt: skip
_MATTERS = [
    ("供水管网改造", "管网改造期间部分楼栋暂停供水"),
    ("二次供水泵房维修", "泵房检修期间高层住户水压偏低"),
    ("10千伏线路检修", "检修期间相关区域停止供电"),
    ("变压器增容改造", "施工期间临时停电"),
    ("燃气管道隐患整治", "整治期间暂停供气并入户安检"),
    ("老旧供热管网更新", "更新期间供热温度可能偏低"),
    ("老旧小区改造", "改造内容包括外墙保温、雨污分流和电梯加装"),
    ("生活垃圾分类", "设置分类投放点并定时定点收运"),
    ("背街小巷路灯亮化", "新装和更换路灯并维修损坏灯杆"),
    ("窨井盖专项排查", "排查缺失、破损、沉降井盖并限期整改"),
    ("夜市疏导点设置", "引导流动摊贩进入疏导点规范经营"),
    ("违法建设专项治理", "拆除楼顶加盖和私搭乱建"),
    ("文明养犬宣传", "开展犬只登记和狂犬病免疫"),
    ("社会保障卡换发", "第三代社会保障卡集中换发"),
    ("城乡居民医保集中缴费", "组织辖区居民按时参保缴费"),
    ("住房公积金归集扩面", "推动灵活就业人员缴存公积金"),
    ("户籍业务窗口延时服务", "午间和周末开设户籍办理窗口"),
    ("不动产登记便民服务", "开设交房即交证绿色通道"),
    ("义务教育招生", "公布学区划片范围和报名时间"),
    ("公交线路优化调整", "调整线路走向和站点设置"),
    ("停车秩序专项整治", "查处违法停车和占用消防通道"),
    ("根治欠薪专项行动", "集中排查工程建设领域欠薪隐患"),
    ("预付卡消费风险提示", "提醒消费者理性办卡、保存凭证"),
    ("食品安全抽检", "对超市和餐饮单位开展食品抽检"),
    ("预防接种门诊调整", "调整儿童预防接种门诊时间"),
    ("养老金待遇调整", "按规定调整退休人员基本养老金"),
    ("低保动态管理", "开展低保对象入户核查"),
    ("高龄津贴发放", "核定本季度高龄津贴发放名单"),
    ("残疾人两项补贴", "发放困难残疾人生活补贴和重度残疾人护理补贴"),
    ("出租汽车服务质量考核", "考核驾驶员服务质量和投诉处理"),
    ("网约车合规化", "清理不合规车辆和驾驶员"),
    ("住房租赁市场整治", "查处克扣押金、发布虚假房源行为"),
    ("城市绿化补植", "补植行道树并修剪遮挡路灯的树枝"),
    ("餐饮油烟治理", "督促餐饮单位安装油烟净化设施"),
    ("建筑工地扬尘噪声管控", "检查夜间施工审批和围挡降尘"),
]
_KINDS = [
    "{place}{matter}的公告",
    "关于{place}{matter}的通知",
    "{year}年{place}{matter}工作方案",
    "{place}{matter}办事指南",
    "{unit}关于{matter}的答复口径",
    "{year}年第{n}批{matter}名单公示",
    "{place}{matter}常见问题解答",
]
_SENTENCES = [
    "根据{unit}工作安排，{year}年{month}月{day}日起在{place}开展{matter}，{detail}。",
    "{detail}，涉及{estate}、{estate2}等小区，请相关居民提前做好准备。",
    "市民如有疑问，可拨打12345政务服务便民热线或{unit}服务电话咨询。",
    "{matter}期间给大家带来的不便，敬请谅解。",
    "具体实施范围为{road}以东、{road2}以北区域，预计{days}个工作日完成。",
    "办理地点：{district}政务服务中心{n}号窗口，办理时限{days}个工作日。",
    "申请人需提交居民身份证、户口簿及相关证明材料，材料不全的一次性告知。",
    "本通知自发布之日起施行，由{unit}负责解释。",
    "各街道办事处、社区居委会要加强宣传，做好{matter}的解释和引导工作。",
    "对群众反映的问题建立台账，实行限时办结和回访制度。",
]


def _fill(template: str, rng: random.Random, matter: tuple[str, str], unit: str) -> str:
    district = rng.choice(_DISTRICTS)
    place = rng.choice([district, district + rng.choice(_STREETS), rng.choice(_ESTATES), ""])
    estate, estate2 = rng.sample(_ESTATES, 2)
    road, road2 = rng.sample(_ROADS, 2)
    return template.format(
        place=place,
        district=district,
        matter=matter[0],
        detail=matter[1],
        unit=unit,
        year=rng.randint(2019, 2026),
        month=rng.randint(1, 12),
        day=rng.randint(1, 28),
        n=rng.randint(1, 30),
        days=rng.randint(3, 60),
        estate=estate,
        estate2=estate2,
        road=road,
        road2=road2,
    )


def filler(n: int, *, seed: int = 18, expired_share: float = 0.05) -> list[Article]:
    """`n` generated articles; `expired_share` of them expired, a few retired, a tenth
    scoped to a district."""
    rng = random.Random(seed)
    made = []
    for i in range(n):
        unit, code = rng.choice(_UNITS)
        matter = rng.choice(_MATTERS)
        title = _fill(rng.choice(_KINDS), rng, matter, unit)
        body = "".join(_fill(s, rng, matter, unit) for s in rng.sample(_SENTENCES, 4))
        roll = rng.random()
        state = "expired" if roll < expired_share else "published"
        if roll > 0.99:
            state = "retired"
        made.append(
            Article(
                key=f"filler-{i}",
                title=title[:200],
                body=body,
                category_code=code,
                policy_source=None,
                document_number=f"{unit[1:3]}发〔{rng.randint(2019, 2026)}〕{rng.randint(1, 99)}号",
                region=rng.choice(_DISTRICTS) if rng.random() < 0.1 else None,
                state=state,
            )
        )
    return made


def as_rows(article: Article) -> dict[str, Any]:
    return {
        "title": article.title,
        "body": article.body,
        "category_code": article.category_code,
        "policy_source": article.policy_source,
        "document_number": article.document_number,
        "region": article.region,
    }
