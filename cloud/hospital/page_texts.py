"""The patient pages' sentences in the shop's two languages (the language is the shop's:
cloud/o2o/shop_texts.language), and the refusals as a patient reads them.

A refusal's English text is the core's own message; the Chinese one is looked up here by the
refusal's code, so both say the same thing (an unknown code falls back to the English).
"""

from __future__ import annotations

from cloud.o2o.shop_texts import language
from plaza.texts import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
    EN: {
        "clinics": "Book a doctor", "fee": "Fee ¥{amount}", "no_fee": "No fee",
        "none_day": "No free times this day.", "book_at": "Book {doctor} at {time}",
        "mine": "My appointments", "none_mine": "No appointments yet.",
        "reports": "My reports", "none_reports": "No reports yet.",
        "pay": "Pay the ¥{amount} fee", "held_until": "Held for you until {when}",
        "arrive": "I have arrived",
        "arrive_hint": "At the hospital, from 30 minutes before your time.",
        "cancel": "Cancel the appointment",
        "cutoff": "Free cancellation until {minutes} minutes before the start",
        "number": "Your number", "ahead": "{n} ahead of you", "next": "You are next",
        "called": "Called: please go to room {room}", "served": "Seen. Thank you!",
        "skipped": "You missed your call: please see the desk.",
        "left": "This number is no longer in the queue.",
        "refresh": "This page refreshes itself every {s} seconds.", "stop": "Stop",
        "reload": "Look again", "follow": "Refresh by itself every {s} seconds",
        "download": "Download the PDF",
        "issued": "Issued {when}", "day": "Day",
        "HELD": "Waiting for the fee", "CONFIRMED": "Booked", "CHECKED_IN": "Arrived",
        "COMPLETED": "Seen", "NO_SHOW": "Missed", "CANCELLED": "Cancelled",
        "EXPIRED": "Hold expired",
    },
    ZH: {
        "clinics": "预约医生", "fee": "挂号费 ¥{amount}", "no_fee": "免挂号费",
        "none_day": "当天没有可预约时间。", "book_at": "预约 {doctor} {time}",
        "mine": "我的预约", "none_mine": "暂无预约。", "reports": "我的报告",
        "none_reports": "暂无报告。", "pay": "支付挂号费 ¥{amount}",
        "held_until": "为您保留至 {when}", "arrive": "我已到达",
        "arrive_hint": "到达医院后，预约时间前 30 分钟起可签到。", "cancel": "取消预约",
        "cutoff": "开始前 {minutes} 分钟以前可免费取消", "number": "您的号码",
        "ahead": "您前面还有 {n} 位", "next": "下一位就是您", "called": "请到 {room} 号诊室就诊",
        "served": "已就诊，谢谢！", "skipped": "您已过号，请到服务台。",
        "left": "此号码已不在队列中。", "refresh": "本页每 {s} 秒自动刷新。", "stop": "停止",
        "reload": "再看一下", "follow": "每 {s} 秒自动刷新",
        "download": "下载 PDF", "issued": "出具于 {when}", "day": "日期",
        "HELD": "待支付挂号费", "CONFIRMED": "已预约", "CHECKED_IN": "已到达",
        "COMPLETED": "已就诊", "NO_SHOW": "未到", "CANCELLED": "已取消", "EXPIRED": "保留已过期",
        # refusals, by code
        "taken": "这个时间刚被约走了，请选择其他时间。",
        "past": "这个时间已经开始，请选择更晚的时间。",
        "expired": "保留已过期，时间已释放，请重新预约。",
        "after_cutoff": "已过免费取消时间，请联系医院。", "started": "预约已开始，无法取消。",
        "not_today": "请在预约时间前 30 分钟至结束前签到。",
        "not_booked": "此预约无法签到。", "no_clinic": "此科室没有排队，请到服务台。",
        "payments": "暂时无法付款，请稍后再试。",
    },
}  # fmt: skip
PAYMENTS_DOWN = "payments are not available right now"


def ht(key: str, **values: object) -> str:
    text = TEXTS.get(language(), TEXTS[EN]).get(key) or TEXTS[EN][key]
    return text.format(**values) if values else text


def refusal(code: str, english: str) -> str:
    """A refusal of the cores (`code`, their English message) in the page's language."""
    return TEXTS[ZH].get(code, english) if language() == ZH else english
