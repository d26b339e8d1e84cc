"""Example request bodies for the OpenAPI document, as a 12345 centre would send them.

A route shows its examples with `openapi_extra=body(...)` (or `with_body(extra, ...)` when it
has an `openapi_extra` of its own); Swagger UI offers them in a list and fills the request
in. tests/web/test_openapi_docs.py checks that each one passes the route's own validation.
"""

from __future__ import annotations

from typing import Any

Example = dict[str, Any]


def example(summary: str, value: Any) -> Example:
    return {"summary": summary, "value": value}


def body(**examples: Example) -> dict[str, Any]:
    """`openapi_extra` adding named examples to a JSON request body."""
    return {"requestBody": {"content": {"application/json": {"examples": examples}}}}


def with_body(extra: dict[str, Any], **examples: Example) -> dict[str, Any]:
    """`extra` (which documents its own request body) with these examples added to it."""
    request_body = dict(extra.get("requestBody", {}))
    content = dict(request_body.get("content", {}))
    content["application/json"] = {**content.get("application/json", {}), "examples": examples}
    return {**extra, "requestBody": {**request_body, "content": content}}


# ---------------------------------------------------------------- tickets

TICKET_CREATE = example(
    "a noise complaint taken on the phone",
    {
        "channel": "phone",
        "caller_name": "王女士",
        "caller_phone": "13812345678",
        "address": "榆阳区青山路 88 号幸福小区 3 栋",
        "district": "榆阳区",
        "street": "青山路街道",
        "title": "夜间施工噪音扰民",
        "description": "小区旁工地连续一周在晚上 11 点后施工，噪音很大，影响老人和孩子休息。",
        "request": "请相关部门查处夜间违规施工",
        "request_type": "complaint",
        "urgency": "normal",
        "occurred_at": "2026-12-04T23:15:00+08:00",
    },
)
TICKET_CREATE_ANONYMOUS = example(
    "an anonymous report, kept confidential",
    {
        "channel": "web",
        "confidential": True,
        "description": "人民路菜市场东门有一处窨井盖缺失，已有电动车差点掉进去。",
        "request_type": "report",
        "urgency": "urgent",
        "district": "榆阳区",
        "latitude": 38.2852,
        "longitude": 109.7346,
    },
)
TICKET_UPDATE = example(
    "correct the address and the category at intake",
    {
        "address": "榆阳区青山路 86 号",
        "category_code": "020601",
        "category_name": "施工噪声",
    },
)
CLOSE_AT_INTAKE = example(
    "answered from the knowledge base",
    {
        "answer": "已告知来电人：社保卡补办可在“陕西人社”APP 在线申请，"
        "或携带身份证到就近社保服务网点办理，工本费免收。"
    },
)
MERGE = example(
    "a second caller about the same construction site",
    {"parent_id": 1024, "reason": "同一工地夜间施工，重复诉求并单处理"},
)

# ---------------------------------------------------------------- workflow

DISPATCH_RULES = example("let the dispatch rules decide", {})
DISPATCH_MANUAL = example(
    "dispatch by hand to a lead unit and a co-unit",
    {
        "lead_unit_code": "URBAN_MGMT",
        "co_unit_codes": ["ECOLOGY"],
        "policy_name": "general",
        "reason": "夜间施工噪音由城管牵头，生态环境局协办监测",
    },
)
REVIEW_APPROVE = example("approve the reply", {"approve": True})
REVIEW_SEND_BACK = example(
    "send the reply back",
    {"approve": False, "reason": "答复未说明处理结果和整改时限，请补充后重新答复"},
)
CALLBACK_SATISFIED = example(
    "the caller is satisfied", {"satisfaction": "satisfied", "comment": "施工已停止，群众满意"}
)
CALLBACK_DISSATISFIED = example(
    "the caller is not satisfied (重办)",
    {"satisfaction": "dissatisfied", "comment": "来电人反映昨晚仍有施工"},
)
CLOSE = example("no callback possible", {"reason": "三次回访均未接通，按规定办结"})
REOPEN = example("reopen a closed ticket", {"reason": "来电人再次来电反映问题未解决"})
REVIEW_RETURN_UPHOLD = example(
    "uphold the dispatch",
    {"uphold": True, "reason": "该路段属于贵单位辖区，请继续办理"},
)
REVIEW_RETURN_REDISPATCH = example(
    "re-dispatch (改派) to another unit",
    {
        "uphold": False,
        "reason": "退单理由成立，改派属地街道",
        "lead_unit_code": "YY_GULOU_STREET",
    },
)
EXTENSION_APPROVE = example(
    "approve the extension", {"approve": True, "reason": "需协调多个部门，同意延期"}
)
EXTENSION_REFUSE = example(
    "refuse the extension", {"approve": False, "reason": "诉求简单，应在原时限内办结"}
)
REPLY = example(
    "the unit's reply",
    {
        "text": "经现场核查，该工地确有夜间施工行为，已责令其停止夜间施工并处罚款，"
        "已与来电人电话沟通。"
    },
)
RETURN = example(
    "not this unit's locality",
    {"reason_code": "wrong_locality", "reason": "该地址属于横山区，不在本街道辖区"},
)
EXTENSION_REQUEST = example(
    "ask for five more working days",
    {"extend_by": 5, "extend_unit": "workdays", "reason": "需等待第三方检测报告"},
)

# ---------------------------------------------------------------- administration

UNIT_CREATE = example(
    "a street office under its district",
    {
        "code": "YY_XINMINGLOU_STREET",
        "name": "榆阳区新明楼街道办事处",
        "level": "street",
        "parent_code": "YY_DISTRICT",
        "district": "榆阳区",
        "email": "xinminglou@example.gov.cn",
        "head_name": "李主任",
    },
)
UNIT_UPDATE = example(
    "a new head of the unit", {"head_name": "张主任", "head_email": "zhang@example.gov.cn"}
)
USER_CREATE_OPERATOR = example(
    "a centre operator",
    {"username": "op.chen", "display_name": "陈晓", "role": "operator", "unit_code": "CENTRE"},
)
USER_CREATE_HANDLER = example(
    "the head of a unit's handlers",
    {
        "username": "urban.liu",
        "display_name": "刘强",
        "role": "handler",
        "unit_code": "URBAN_MGMT",
        "email": "liu.qiang@example.gov.cn",
        "is_head": True,
    },
)
RULE_CREATE = example(
    "route stray-dog reports to urban management",
    {
        "name": "流浪犬",
        "priority": 60,
        "description": "流浪狗伤人、扰民",
        "conditions": {"text_any": ["流浪狗", "流浪犬", "野狗"]},
        "actions": {
            "category_code": "050901",
            "category_name": "流浪犬只",
            "lead_unit": "URBAN_MGMT",
            "sla_policy": "general",
        },
        "pack": "custom",
    },
)
RULE_UPDATE = example("lower a rule's priority and disable it", {"priority": 95, "enabled": False})
DRY_RUN = example(
    "which rule takes a gas smell at night",
    {
        "text": "楼道里闻到很重的煤气味",
        "request_type": "report",
        "district": "榆阳区",
        "channel": "phone",
        "local_time": "22:40:00",
    },
)
PACK_IMPORT = example(
    "a pack of one rule, in YAML",
    {
        "format": "yaml",
        "replace": False,
        "text": "pack: custom\n"
        "version: 1\n"
        "rules:\n"
        "- name: 共享单车乱停放\n"
        "  priority: 62\n"
        "  conditions:\n"
        "    text_any: [共享单车, 单车乱停]\n"
        "  actions:\n"
        "    lead_unit: URBAN_MGMT\n"
        "    sla_policy: general\n",
    },
)
POLICY_CREATE = example(
    "utilities answer within 24 hours",
    {
        "name": "utilities-24h-winter",
        "description": "冬季供暖诉求：2 小时内签收，24 小时内答复，72 小时内办结",
        "category_prefix": "0904",
        "sign_limit": 2,
        "sign_unit": "hours",
        "reply_limit": 24,
        "reply_unit": "hours",
        "close_limit": 72,
        "close_unit": "hours",
        "warn_ratio": 0.75,
        "chain": [{"kind": "warning"}, {"kind": "chase", "after_breach_hours": 0}],
    },
)
POLICY_UPDATE = example("allow ten working days to close", {"close_limit": 10})
YEAR_CONFIRM = example(
    "checked against the State Council's notice",
    {"note": "已核对国务院办公厅关于2027年部分节假日安排的通知"},
)
DAY_HOLIDAY = example("a public holiday", {"is_workday": False, "name": "国庆节"})
DAY_MAKEUP = example("a make-up working day (调休)", {"is_workday": True, "name": "国庆节调休"})
CALENDAR_IMPORT = example(
    "a year's holidays, one line each",
    {
        "text": "2027-01-01 holiday 元旦\n"
        "2027-02-06..2027-02-12 holiday 春节\n"
        "2027-02-14 workday 春节调休\n"
    },
)

# ---------------------------------------------------------------- the operators' console

AGENT_SIGN_IN = example(
    "sign in at seat 8012", {"state": "signed_in", "extension": "8012", "skills": ["zh", "yue"]}
)
AGENT_READY = example("ready for calls", {"state": "ready"})
AGENT_BREAK = example("not ready: a break", {"state": "not_ready", "reason": "break"})
AGENT_SIGN_OUT = example("sign out", {"state": "signed_out"})


# ---------------------------------------------------------------- answers


def answer(description: str, value: Any) -> dict[str, Any]:
    """A success entry of `responses=`, with an example of the body. FastAPI leaves every
    null out of the document's examples, so an example holds none: a model whose answer
    has fields that are required and often null (a ticket's) is shown by its schema."""
    return {"description": description, "content": {"application/json": {"example": value}}}


USER_READ: dict[str, Any] = {
    "id": 12,
    "username": "op.chen",
    "display_name": "陈晓",
    "role": "operator",
    "unit_code": "CENTRE",
    "is_head": False,
    "email": "chen.xiao@example.gov.cn",
    "active": True,
    "created_at": "2026-03-01T08:00:00Z",
}
