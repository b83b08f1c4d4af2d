"""The queue pages' sentences in the shop's two languages (the language is the shop's:
cloud/o2o/shop_texts.language), and the refusals as a shopper reads them.

A refusal's English text is the core's own message (cloud/o2o/queues.QueueError); the
Chinese one is looked up here by its code, so both say the same thing.
"""

from __future__ import annotations

from cloud.o2o.queues import QueueError
from cloud.o2o.shop_texts import language
from plaza.texts import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
    EN: {
        "queues": "Take a number", "none": "No queue is open here now.", "take": "Take a number",
        "waiting": "{n} waiting", "about": "about {m} min", "notify": "Tell me on my phone",
        "yours": "Your numbers", "number": "Your number", "ahead": "{n} ahead of you",
        "next": "You are next", "called": "Please come to window {counter}",
        "skipped": "You missed your call. Come to the desk within {m} min to be recalled.",
        "SERVED": "Served. Thank you!", "EXPIRED": "This number has expired.",
        "CANCELLED": "You left the queue.", "leave": "Leave the queue", "wait": "Estimated wait",
        "estimator": "From the time between the last calls.",
        "prior": "An estimate: too few calls so far today.", "refresh": "This page refreshes "
        "itself.", "scan": "Scan to follow your number on your phone", "kiosk": "Touch to "
        "take a number", "again": "Take another", "print": "Keep this ticket",
        "taken_at": "Taken at", "display": "Now serving", "window": "Window",
        "waiting_at": "Waiting", "closed": "Closed",
    },
    ZH: {
        "queues": "取号", "none": "现在没有开放的队列。", "take": "取号", "waiting": "{n} 人等候",
        "about": "约 {m} 分钟", "notify": "在手机上通知我", "yours": "您的号码",
        "number": "您的号码",
        "ahead": "您前面还有 {n} 位", "next": "下一位就是您", "called": "请到 {counter} 号窗口",
        "skipped": "您已过号。请在 {m} 分钟内到柜台，可重新叫号。", "SERVED": "已办理，谢谢！",
        "EXPIRED": "此号码已失效。", "CANCELLED": "您已离开队列。", "leave": "离开队列",
        "wait": "预计等候", "estimator": "根据最近几次叫号的间隔估算。",
        "prior": "估算值：今天叫号还太少。", "refresh": "本页会自动刷新。",
        "scan": "扫码在手机上查看叫号进度", "kiosk": "点击取号", "again": "再取一个",
        "print": "请保留此票", "taken_at": "取号时间", "display": "正在叫号", "window": "窗口",
        "waiting_at": "等候", "closed": "已关闭",
    },
}  # fmt: skip

REFUSALS_ZH = {
    "already_waiting": "您在这个队列中已经有号码了：{label}。",
    "closed": "该队列已关闭，现在不取号。",
    "other_venue": "此号码属于另一家门店。",
    "other_queue": "此号码属于另一个队列。",
    "not_found": "找不到该队列或号码。",
    "busy": "人太多了，请再试一次。",
    "bad_state": "此号码的状态已改变。",
}


def qt(key: str, **values: object) -> str:
    text = TEXTS.get(language(), TEXTS[EN]).get(key) or TEXTS[EN][key]
    return text.format(**values) if values else text


def refusal(exc: QueueError) -> str:
    """The refusal in the reader's language."""
    if language() == ZH and exc.code in REFUSALS_ZH:
        label = exc.ticket.label if exc.ticket is not None else ""
        return REFUSALS_ZH[exc.code].format(label=label)
    return str(exc)
