"""The console's words, Japanese first with an English switch (cookie ``renkei_lang``)."""

from __future__ import annotations

import re
from collections.abc import Callable

LANGUAGES = ("ja", "en")
DEFAULT_LANGUAGE = "ja"

TEXTS: dict[str, tuple[str, str]] = {
    "app": ("renkei 運用コンソール", "renkei operations console"),
    "login": ("ログイン", "Log in"),
    "logout": ("ログアウト", "Log out"),
    "username": ("利用者名", "Username"),
    "password": ("パスワード", "Password"),
    "session_idle": (
        "一定時間操作がなかったため、ログアウトしました。もう一度ログインしてください。",
        "You were logged out after a period without activity. Please log in again.",
    ),
    "session_expired": (
        "ログインから 8 時間が経過したため、ログアウトしました。もう一度ログインしてください。",
        "You were logged out 8 hours after logging in. Please log in again.",
    ),
    "session_towns": (
        "担当団体がすべて利用停止中になったため、ログアウトしました。管理者に連絡してください。",
        "You were logged out: every town your account acts for has been disabled. "
        "Contact the hub's administrator.",
    ),
    "dashboard": ("ダッシュボード", "Dashboard"),
    "messages": ("メッセージ検索", "Messages"),
    "message": ("メッセージ詳細", "Message"),
    "dead_letters": ("配信不能（デッドレター）", "Dead letters"),
    "destinations": ("配信先", "Destinations"),
    "configuration": ("ルートと接続システム", "Routes and systems"),
    "imports": ("一括取込", "Imports"),
    "health": ("稼働状況", "Health"),
    "signed_in_as": ("ログイン中", "Signed in as"),
    "role": ("権限", "Role"),
    "tenants": ("団体", "Tenants"),
    "tenant": ("団体コード", "Tenant"),
    "service": ("業務（サービス）", "Service"),
    "system": ("送信元システム", "System"),
    "subject": ("サブジェクト（宛名番号等）", "Subject"),
    "status": ("状態", "Status"),
    "message_id": ("メッセージ ID", "Message ID"),
    "received_at": ("受信日時", "Received"),
    "date_from": ("期間（開始日）", "From (day)"),
    "date_to": ("期間（終了日）", "To (day)"),
    "date_hint": ("和暦・西暦どちらでも（例：令和8年11月26日）", "和暦 or 西暦, e.g. 2026-11-26"),
    "search": ("検索", "Search"),
    "any": ("すべて", "any"),
    "results": ("検索結果", "Results"),
    "no_results": ("該当するメッセージはありません。", "No messages match."),
    "next_page": ("次の {n} 件（より古いもの）", "Next {n} (older)"),
    "first_page": ("最新の {n} 件に戻る", "Back to the newest {n}"),
    "header": ("ヘッダ", "Header"),
    "body": ("本文", "Body"),
    "body_masked": ("個人情報はマスクしています。", "Personal data is masked."),
    "body_unmasked": (
        "マスク解除して表示中（閲覧ログに記録済み）。支援措置対象者の住所は表示しません。",
        "Unmasked (recorded in the access log); addresses under 支援措置 stay hidden.",
    ),
    "unmask": ("マスク解除して表示", "Show unmasked"),
    "unmask_reason": (
        "閲覧理由（必須・閲覧ログに記録）",
        "Reason (required, recorded in the access log)",
    ),
    "findings": ("検証結果", "Validation findings"),
    "no_findings": ("記録された検証エラー・警告はありません。", "No findings recorded."),
    "route": ("ルーティング結果", "Route decision"),
    "routed_to": ("配信先（受信時の判断）", "Destinations decided at receipt"),
    "configured_route": ("現在の設定のルート", "Route in the current configuration"),
    "provider": ("回答システム", "Provider"),
    "deliveries": ("配信", "Deliveries"),
    "attempts": ("配信試行", "Delivery attempts"),
    "attempt": ("試行", "Attempt"),
    "outcome": ("結果", "Outcome"),
    "error": ("エラー", "Error"),
    "destination": ("配信先", "Destination"),
    "sequence": ("順序番号", "Sequence"),
    "state": ("状態", "State"),
    "audit": ("監査記録", "Audit trail"),
    "event": ("事象", "Event"),
    "actor": ("実行者", "Actor"),
    "detail": ("内容", "Detail"),
    "at": ("日時", "At"),
    "correlation_id": ("相関 ID", "Correlation ID"),
    "reason": ("理由（必須）", "Reason (required)"),
    "state_reason": ("理由", "Reason"),
    "redeliver": ("再送", "Redeliver"),
    "discard": ("破棄", "Discard"),
    "select": ("選択", "Select"),
    "select_delivery": (
        "{destination} への配信を選択（{service}、メッセージ ID {message_id}）",
        "Select the delivery to {destination} ({service}, message ID {message_id})",
    ),
    "masked_ending": ("マスク済み、末尾 {last}", "masked, ending {last}"),
    "no_dead_letters": ("配信不能のメッセージはありません。", "No dead letters."),
    "dead_total": ("全 {total} 件", "{total} in all"),
    "dead_shown": (
        "全 {total} 件のうち先頭 {shown} 件を表示",
        "{total} in all; the first {shown} are shown",
    ),
    "dead_more": (
        "残りは、表示中のものを再送・破棄した後に表示されます。配信先で絞り込むこともできます。",
        "The rest are shown once these are redelivered or discarded; or filter by destination.",
    ),
    "dead_shown_range": (
        "全 {total} 件のうち {first}〜{last} 件目を表示",
        "{total} in all; {first} to {last} are shown",
    ),
    "dead_pages": ("配信不能のページ", "Pages of dead letters"),
    "dead_next_page": ("次の {n} 件", "Next {n}"),
    "dead_first_page": ("最初（古いもの）に戻る", "Back to the oldest"),
    "dead_all_link": (
        "この条件の {total} 件すべてをまとめて処理…",
        "Act on all {total} matching…",
    ),
    "dead_all": ("配信不能の一括処理", "Dead letters: act on all"),
    "dead_all_count": (
        "対象（この画面を開いた時点の配信不能）",
        "Dead now (when this page opened)",
    ),
    "dead_all_note": (
        "この画面を開いた後に配信不能になったものは対象外です（一覧に残ります）。"
        "恒久エラー（受信側が拒否）のものは、原因を直してから再送してください。",
        "Letters that die after this page opened are left out (they stay in the list). "
        "Redeliver those the destination refused only once the cause is fixed.",
    ),
    "dead_all_confirm": (
        "上記の {total} 件（理由で絞った場合はその分）を処理することを確認しました",
        "I confirm acting on these {total} (or those of the chosen why)",
    ),
    "dead_all_redeliver": ("すべて再送する", "Redeliver them all"),
    "dead_all_window": ("配信不能になった期間", "Dead within"),
    "dead_all_window_hint": (
        "和暦・西暦どちらでも（例：令和8年11月26日）。日本時間、終了日はその日の終わりまで。"
        "障害の前から残っているものを巻き込まずに済みます。",
        "和暦 or 西暦, e.g. 2026-11-26; Japan time, the whole of the last day. Leaves out "
        "those dead before the outage",
    ),
    "dead_all_pace_legend": ("再送の速さ", "Pace of the redelivery"),
    "dead_all_per_second": ("毎秒の件数", "A second"),
    "dead_all_pace_hint": (
        "相手システムが 1 秒に受けられる件数（0.01〜10000）。空欄ならすべて今すぐです。",
        "Blank: all due now. How many the destination takes a second (0.01 to 10000)",
    ),
    "dead_all_recount": ("この条件で数え直す", "Count again with these"),
    "dead_all_pace": (
        "再送は、古いものから順に毎秒 {n} 件ずつ、約 {duration}かけて送ります"
        "（配信予定時刻を 1/{n} 秒ずつずらして割り当てます）。",
        "Redelivered the oldest first at {n} a second: about {duration} (due times 1/{n} s apart).",
    ),
    "dead_all_minutes": ("{n} 分", "{n} min"),
    "dead_all_seconds": ("{n} 秒", "{n} s"),
    "dead_all_unpaced": (
        "速さの指定がないため、再送するとすべてが今すぐ配信予定になります（数万件のときは毎秒の件数を"
        "指定してください）。",
        "No pace: redelivered, all of them are due now (for tens of thousands, give how many "
        "a second).",
    ),
    "dead_all_discard": ("すべて破棄する", "Discard them all"),
    "dead_all_progress": (
        "{action}：{done} 件を処理しました（残り最大 {left} 件）。続けて処理しています…",
        "{action}: {done} done ({left} at most left); continuing…",
    ),
    "dead_all_continue": ("続ける", "Continue"),
    "dead_all_continue_note": (
        "自動で続かないときは「続ける」を押してください。途中でやめても、処理済みの分はそのままです。",
        "If it does not continue by itself, press Continue. Stopping leaves what was done as done.",
    ),
    "cancel": ("やめる", "Cancel"),
    "why_dead": ("配信不能の理由", "Why dead"),
    "select_all_shown": ("表示中の {shown} 件をすべて選択", "Select all {shown} shown"),
    "filter": ("絞り込む", "Filter"),
    "last_error": ("最後のエラー", "Last error"),
    "done": ("処理しました", "Done"),
    "paused": ("一時停止中", "Paused"),
    "destination_paused": ("配信先が一時停止中", "destination paused"),
    "waiting_behind": ("先の配信を待機中", "waiting for delivery"),
    "active": ("稼働中", "Active"),
    "held": ("送信を控え中（相手の Retry-After）", "Held (its Retry-After)"),
    "held_unreachable": ("送信を控え中（接続できない）", "Held (unreachable)"),
    "pause": ("一時停止", "Pause"),
    "resume": ("再開", "Resume"),
    "resume_per_second": (
        "再開の速さ（毎秒の件数、0.01〜10000）。空欄なら待っている分すべてが今すぐです。",
        "Pace of the resume: a second (0.01 to 10000; blank: all waiting due now)",
    ),
    "resume_paced": (
        "{system} を再開しました：待っている {n} 件に、古いものから順に毎秒 {per_second} 件ずつ、"
        "約 {duration}かけて送るよう配信予定時刻を割り当てました（1/{per_second} 秒ずつ）。",
        "Resumed {system}: {n} waiting given due times the oldest first at {per_second} a "
        "second: about {duration} (1/{per_second} s apart).",
    ),
    "queue_depth": ("配信待ち", "Queue depth"),
    "dead": ("配信不能", "Dead letters"),
    "failures": ("失敗した配信試行（直近 24 時間）", "Failed delivery attempts (last 24 hours)"),
    "received_24h": ("受信件数（直近 24 時間）", "Messages received (last 24 hours)"),
    "o_clock": ("時", ":00"),
    "delivered": ("配信済み", "Delivered"),
    "count": ("件数", "Count"),
    "per_hour": (
        "1 時間ごとの受信件数（直近 24 時間）",
        "Messages received per hour (last 24 hours)",
    ),
    "per_service": (
        "業務・団体別の受信件数（直近 24 時間）",
        "Messages per service and tenant (last 24 hours)",
    ),
    "per_destination": ("配信先別の状況", "Per destination"),
    "routes": ("ルート", "Routes"),
    "subscribers": ("購読システム", "Subscribers"),
    "systems": ("接続システム", "Connected systems"),
    "name": ("名称", "Name"),
    "kind": ("種別", "Kind"),
    "transport": ("方式", "Transport"),
    "delivery_mode": ("配信方法", "Delivery"),
    "batches": ("取込バッチ", "Batches"),
    "no_batches": ("取込バッチはありません。", "No import batches."),
    "file_hash": ("ファイル（名前・ハッシュ）", "File (name, hash)"),
    "progress": ("進捗（行）", "Progress (line)"),
    "new": ("新規", "New"),
    "duplicate": ("重複", "Duplicate"),
    "errors": ("エラー", "Errors"),
    "last_commit": ("最終更新", "Last commit"),
    "error_report": ("エラー一覧", "Error report"),
    "line": ("行", "Line"),
    "field": ("項目", "Field"),
    "code": ("コード", "Code"),
    "severity": ("重要度", "Severity"),
    "check": ("確認項目", "Check"),
    "ok": ("正常", "OK"),
    "ng": ("異常", "Failing"),
    "version": ("バージョン", "Version"),
    "config_version": ("設定の版", "Configuration version"),
    "not_found": ("見つかりません。", "Not found."),
    "forbidden": ("この操作の権限がありません。", "You are not allowed to do this."),
    "refused": ("受け付けられません", "Refused"),
    "back": ("戻る", "Back"),
    "language": ("English", "日本語"),
    "skip_to_content": ("本文へ移動", "Skip to content"),
    "main_menu": ("メインメニュー", "Main menu"),
    "input_error": ("入力エラー", "Input error"),
    "actions": ("操作", "Actions"),
    "hour": ("時刻", "Hour"),
    "per_hour_table": ("表で見る", "Show as a table"),
    "dead_letters_table": ("配信不能の一覧", "Dead letters"),
    "dead_all_selection": ("一括処理の対象", "What the work acts on"),
    "check_results": ("確認結果", "Checks"),
    "confirm_step": ("確認", "confirmation"),
    "dead_all_progress_label": ("一括処理の進み具合", "Progress of the work"),
    "dead_all_progress_title": (
        "{action}：{done} 件処理済み・残り最大 {left} 件",
        "{action}: {done} done, {left} at most left",
    ),
    "dead_all_pause": ("一時停止", "Pause"),
    "dead_all_pausing": (
        "一時停止します。処理中の分が終わると止まります…",
        "Pausing: it stops once the step under way is done…",
    ),
    "dead_all_paused": (
        "一時停止中です。「続ける」を押すと再開します。",
        "Paused. Press Continue to resume.",
    ),
    "trail": ("開示請求（提供記録）", "Disclosure (resident trail)"),
    "trail_intro": (
        "1 人の住民について、ハブが受け取ったメッセージ、その提供先と状態、"
        "運用者の操作を取り出します（保有個人情報の開示請求・支援措置の確認用。"
        "renkei messages trail と同じ内容です）。",
        "One resident's messages, where each went and in what state, and operators' actions "
        "(for a disclosure request or a 支援措置 question; the same as renkei messages trail).",
    ),
    "resident": ("宛名番号", "宛名番号 (resident number)"),
    "resident_hint": (
        "数字のみ（全角数字も可）。URL・閲覧履歴・ログには残らず、結果ではマスクして表示します。",
        "Digits only (full-width too). Kept out of URLs, history and logs; shown masked.",
    ),
    "since": ("この日以降（任意）", "Since (optional)"),
    "since_hint": (
        "和暦・西暦どちらでも。その日の 0 時（日本時間）以降の出来事だけを示します。",
        "和暦 or 西暦: only what happened from that day's midnight (JST) on.",
    ),
    "trail_wareki": ("CSV に和暦の列を加える", "Add a 和暦 column to the CSV"),
    "trail_show": ("画面に表示", "Show"),
    "trail_download": ("CSV をダウンロード", "Download CSV"),
    "trail_recorded": (
        "照会するたびに（CSV のダウンロードも）、操作者・団体・マスクした宛名番号を"
        "管理操作の監査記録（message.trail）に残します。",
        "Every lookup (each CSV download too) is recorded on the admin audit chain "
        "(message.trail) with the operator, the town and the 宛名番号 masked.",
    ),
    "trail_summary": (
        "団体 {tenant}・宛名番号 {resident}："
        "メッセージ {messages} 件、提供 {provisions} 件、操作 {actions} 件",
        "Town {tenant}, 宛名番号 {resident}: {messages} message(s), {provisions} provision(s), "
        "{actions} action(s)",
    ),
    "trail_since": ("{since} 以降", "since {since}"),
    "trail_events": ("出来事（時刻順）", "Events (in time order)"),
    "trail_none": ("この宛名番号の記録はありません。", "Nothing is on record for this 宛名番号."),
    "trail_csv_again": (
        "この結果を CSV でダウンロード（照会としてもう一度記録されます）",
        "Download this as CSV (recorded as another lookup)",
    ),
    "trail_excluded": (
        "含まれないもの（回答の際に添えてください）："
        "本文の中にだけ宛名番号がある通知（一括取込・氏名での照会など）、"
        "受け付けなかったメッセージ、保存期間を過ぎて削除されたメッセージ、"
        "PULL フィードでの読み取り、訂正の訂正（2 段階先）、"
        "受け取ったシステムがその後に行った提供。",
        "Not included (say so in the answer): messages naming the resident only in their body "
        "(batch imports, inquiries by name), refused messages, messages purged after their "
        "retention, reads of PULL feeds, corrections of corrections, and what receiving systems "
        "passed on afterwards.",
    ),
    "row_kind": ("区分", "Event"),
    "relation": ("関係", "Relation"),
    "masked_resident": ("宛名番号（マスク）", "宛名番号 (masked)"),
    "provided_to": ("提供先システム", "Provided to"),
    "attempt_count": ("試行回数", "Attempts"),
    "operated_by": ("操作者", "Operator"),
    "dead_all_pause_note": (
        "自動で続けて処理します。「一時停止」ボタンまたは Esc キーで止められます。",
        "The work continues by itself; the Pause button or the Esc key stops it.",
    ),
}


# States of messages, deliveries and attempts (the stored values stay in English).
STATES: dict[str, tuple[str, str]] = {
    "stored": ("保存済み", "stored"),
    "pending": ("配信待ち", "pending"),
    "dead": ("配信不能", "dead"),
    "discarded": ("破棄済み", "discarded"),
    "delivered": ("配信済み", "delivered"),
    "retry": ("再試行", "retry"),
    "permanent": ("恒久エラー", "permanent"),
    # the attempt that dead-lettered its delivery (``AttemptLine.label``)
    "dead_retries": ("配信不能（再試行の上限）", "dead letter (retries exhausted)"),
    "dead_permanent": ("配信不能（恒久エラー）", "dead letter (permanent error)"),
    # import batches (bus/imports/worklist.py)
    "running": ("取込中", "running"),
    "done": ("完了", "done"),
}

_REFUSED = (
    "受信側システムがこのメッセージを受け付けませんでした。受信側で理由を確かめてから再送してください。",
    "The receiving system refused this message; find out why there before redelivering.",
)
_FAILED = ("受信側システムで障害が起きています。", "The receiving system is failing.")
#: What a delivery error means, for staff: the error is the transport's own short text
#: (bus/dispatch, adapters/*_out), in English; the first pattern that matches explains it.
ERROR_MEANINGS: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = tuple(
    (re.compile(pattern), meaning)
    for pattern, meaning in (
        (
            r"HTTP (408|429)\b",
            (
                "受信側システムが混雑していて受け付けませんでした。",
                "The receiving system was busy.",
            ),
        ),
        (r"HTTP 5\d\d\b", _FAILED),
        (r"HTTP 4\d\d\b", _REFUSED),
        (r"SOAP Fault Client", _REFUSED),
        (r"SOAP Fault", _FAILED),
        (
            r"unexpected HTTP",
            (
                "受信側システムが想定外の応答（転送など）を返しました。",
                "The receiving system answered unexpectedly (e.g. a redirect).",
            ),
        ),
        (
            r"(timeout|connection): WSDL|WSDL",
            (
                "受信側システムの WSDL を取得または解釈できませんでした。",
                "The receiving system's WSDL could not be fetched or read.",
            ),
        ),
        (
            r"timeout:",
            (
                "受信側システムが時間内に応答しませんでした。",
                "The receiving system did not answer in time.",
            ),
        ),
        (
            r"connection:",
            (
                "受信側システムに接続できませんでした（停止中、またはネットワークの障害）。",
                "The receiving system could not be reached (down, or a network fault).",
            ),
        ),
        (
            r"translation:",
            (
                "配信先の形式への変換に失敗しました。変換定義ファイルを確かめてください。",
                "Translating to the destination's format failed; check its mapping file.",
            ),
        ),
        (
            r"(invalid for|not expressible in|the system's WSDL has no)",
            (
                "メッセージが受信側システムの WSDL に合いません。",
                "The message does not fit the receiving system's WSDL.",
            ),
        ),
        (
            r"(no endpoint configured|endpoint has no url|endpoint url is not|unknown transport"
            r"|file endpoint without|binding:)",
            (
                "配信先の接続設定（systems.yaml）に誤りがあります。",
                "The destination's endpoint settings (systems.yaml) are wrong.",
            ),
        ),
        (
            r"broker:",
            (
                "メッセージブローカーに接続できませんでした。",
                "The message broker could not be reached.",
            ),
        ),
        (
            r"folder:",
            (
                "配信先のフォルダに書き込めませんでした。",
                "The destination folder could not be written.",
            ),
        ),
    )
)


#: Why a letter is dead (its ``dead`` audit record: bus/dispatch/operations.py ``DeadLetter``).
WHYS: dict[str, tuple[str, str]] = {
    "permanent": ("恒久エラー（受信側が拒否）", "permanent (refused)"),
    "attempts": ("再試行の上限（回数）", "retries ran out (count)"),
    "age": ("再試行の上限（期間）", "retries ran out (age)"),
}
_WHY_UNKNOWN = ("不明", "unknown")


def why_labeller(lang: str) -> Callable[[str | None], str]:
    column = 1 if lang == "en" else 0
    return lambda why: WHYS.get(why or "", _WHY_UNKNOWN)[column]


def state_labeller(lang: str) -> Callable[[str], str]:
    column = 1 if lang == "en" else 0
    return lambda value: STATES[value][column] if value in STATES else value


def waiting_labeller(lang: str) -> Callable[[str], str]:
    """What a pending delivery waits for (``DeliveryView.waiting_for``: ``paused``, or
    ``#<id> <state>`` of the earlier delivery of its subject), in the page's language."""
    t, state = translator(lang), state_labeller(lang)

    def label(waiting_for: str) -> str:
        if waiting_for == "paused":
            return t("destination_paused")
        ahead, _, ahead_state = waiting_for.partition(" ")
        opening, closing = ("（", "）") if lang != "en" else (" (", ")")
        return f"{t('waiting_behind')} {ahead}{opening}{state(ahead_state)}{closing}"

    return label


def error_explainer(lang: str) -> Callable[[str | None], str]:
    """What a delivery error means, in the page's language ("" when it is not one known)."""
    column = 1 if lang == "en" else 0

    def explain(error: str | None) -> str:
        for pattern, meaning in ERROR_MEANINGS:
            if error and pattern.match(error):
                return meaning[column]
        return ""

    return explain


def parenthesised(lang: str) -> Callable[[object], str]:
    """A remark in parentheses after what it qualifies: full-width （） in Japanese, a space
    and ASCII ( ) in English."""
    if lang == "en":
        return lambda text: f" ({text})"
    return lambda text: f"（{text}）"


def translator(lang: str) -> Callable[[str], str]:
    column = 1 if lang == "en" else 0

    def t(key: str) -> str:
        return TEXTS[key][column]

    return t
