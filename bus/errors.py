"""The only registry of renkei's error codes (``RK-<AREA><nnn>``) and their ja/en templates.

Every finding the hub returns is made here by :func:`make_finding`, so an unregistered code
cannot reach a caller. Templates are ``str.format`` strings; ``{field_ja}``/``{field_en}`` are
filled with the item's Japanese name / id (or the path when the finding has no item).
Codes are stable: never renumber, only add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bus.pipeline import Finding, Severity

CODE_PATTERN = re.compile(r"RK-[A-Z]{2,4}[0-9]{3}")


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    severity: Severity
    message_ja: str
    message_en: str


class UnknownErrorCode(KeyError):
    """A code was used that is not in the registry."""


def _codes(*entries: tuple[str, Severity, str, str]) -> dict[str, ErrorCode]:
    registry: dict[str, ErrorCode] = {}
    for code, severity, ja, en in entries:
        if not CODE_PATTERN.fullmatch(code) or code in registry:
            raise ValueError(f"bad or duplicate error code {code!r}")
        registry[code] = ErrorCode(code, severity, ja, en)
    return registry


E, W = Severity.ERROR, Severity.WARNING

REGISTRY: dict[str, ErrorCode] = _codes(
    # --- SEC: secure parsing, refused before or during the parse -------------------------
    (
        "RK-SEC001",
        E,
        "DOCTYPE 宣言を含む文書は受け付けません。",
        "Documents with a DOCTYPE declaration are refused.",
    ),
    (
        "RK-SEC002",
        E,
        "文書が大きすぎます（上限 {limit} バイト、実際 {actual} バイト）。",
        "Document too large (limit {limit} bytes, got {actual}).",
    ),
    (
        "RK-SEC003",
        E,
        "要素の入れ子が深すぎます（上限 {limit}）。",
        "Elements nested too deeply (limit {limit}).",
    ),
    (
        "RK-SEC004",
        E,
        "一つの要素の属性が多すぎます（上限 {limit}）。",
        "Too many attributes on one element (limit {limit}).",
    ),
    (
        "RK-SEC005",
        E,
        "文字コードが UTF-8 ではありません（{actual}）。",
        "Encoding is not UTF-8 ({actual}).",
    ),
    ("RK-SEC006", E, "XML として正しくありません。", "Not well-formed XML."),
    (
        "RK-SEC007",
        E,
        "XInclude は処理しないため、受け付けません。",
        "XInclude is not processed and is refused.",
    ),
    ("RK-SEC008", E, "文書が空です。", "The document is empty."),
    ("RK-SEC009", E, "エンティティ参照は受け付けません。", "Entity references are refused."),
    (
        "RK-SEC010",
        E,
        "一つの要素の子要素が多すぎます（上限 {limit}）。",
        "Too many child elements in one element (limit {limit}).",
    ),
    # --- ENV: the PlatformMessage envelope and its SOAP binding -----------------------------
    (
        "RK-ENV001",
        E,
        "ルート要素が PlatformMessage または SOAP Envelope ではありません（{actual}）。",
        "Root element is neither PlatformMessage nor a SOAP Envelope ({actual}).",
    ),
    (
        "RK-ENV002",
        E,
        "SOAP の Header または Body の形が正しくありません。",
        "The SOAP Header or Body is not in the expected form.",
    ),
    (
        "RK-ENV003",
        E,
        "ヘッダのサービス名（{expected}）と本文のサービス要素（{actual}）が一致しません。",
        "Header service name ({expected}) does not match the service element ({actual}).",
    ),
    (
        "RK-ENV004",
        E,
        "サービス要素 {actual} はこのエンドポイント（{expected}）では受け付けません。",
        "The service element {actual} is not accepted at the endpoint of {expected}.",
    ),
    (
        "RK-ENV005",
        E,
        "SOAP ヘッダブロック {actual} は mustUnderstand ですが、ハブはこれを処理しません。",
        "The SOAP header block {actual} is marked mustUnderstand, but the hub does not process it.",
    ),
    (
        "RK-ENV006",
        E,
        "SOAP Envelope の名前空間 {actual} は SOAP 1.1 のもの（{expected}）ではありません。",
        "The SOAP Envelope's namespace {actual} is not SOAP 1.1's ({expected}).",
    ),
    # --- XSD: schema validation, one code per kind of failure -----------------------------
    (
        "RK-XSD001",
        E,
        "{field_ja}の形式が正しくありません（パターン {expected}）。",
        "{field_en} does not match the required pattern {expected}.",
    ),
    (
        "RK-XSD002",
        E,
        "{field_ja}はコード表にない値です。",
        "{field_en} is not one of the allowed codes.",
    ),
    ("RK-XSD003", E, "{field_ja}の長さが範囲外です。", "{field_en} has a length out of range."),
    ("RK-XSD004", E, "必須項目{field_ja}がありません。", "Required item {field_en} is missing."),
    ("RK-XSD005", E, "想定外の要素{field_ja}があります。", "Unexpected element {field_en}."),
    (
        "RK-XSD006",
        E,
        "{field_ja}の値が正しくありません（{type_ja}）。",
        "{field_en} has an invalid value ({type_en}).",
    ),
    ("RK-XSD007", E, "{field_ja}の値が範囲外です。", "{field_en} is out of the allowed range."),
    (
        "RK-XSD008",
        E,
        "{field_ja}の属性が正しくありません。",
        "{field_en} has an invalid attribute.",
    ),
    (
        "RK-XSD009",
        E,
        "指摘が多すぎるため最初の {limit} 件のみ示します（ほか {actual} 件を省略）。",
        "Too many findings: the first {limit} are shown ({actual} more omitted).",
    ),
    (
        "RK-XSD099",
        E,
        "{field_ja}がスキーマに適合しません。",
        "{field_en} does not conform to the schema.",
    ),
    # --- DOM: domain rules -----------------------------------------------------------------
    (
        "RK-DOM001",
        E,
        "{field_ja}の検査数字が正しくありません（全国地方公共団体コード）。",
        "{field_en} has a wrong check digit (local government code).",
    ),
    (
        "RK-DOM002",
        E,
        "{field_ja}の検査数字が正しくありません（個人番号）。",
        "{field_en} has a wrong check digit (My Number).",
    ),
    (
        "RK-DOM003",
        E,
        "{field_ja}の検査数字が正しくありません（法人番号）。",
        "{field_en} has a wrong check digit (corporate number).",
    ),
    (
        "RK-DOM004",
        W,
        "{field_ja}の検査数字（モジュラス11 ウェイト2〜7）が正しくありません。",
        "{field_en} fails the modulus-11 (weights 2-7) check digit.",
    ),
    (
        "RK-DOM005",
        W,
        "{field_ja}の検査数字（モジュラス11）が正しくありません（住民票コード）。",
        "{field_en} fails the modulus-11 check digit (resident record code).",
    ),
    (
        "RK-DOM010",
        E,
        "{field_ja}の和暦が元号の範囲外です（{actual}）。",
        "{field_en} is outside the span of its Japanese era ({actual}).",
    ),
    (
        "RK-DOM011",
        E,
        '{field_ja}は日付として解釈できません。不詳の日付などは、そのまま保持する指定（asGiven="true"）を付けてください。',
        '{field_en} cannot be read as a date; unknown dates need asGiven="true".',
    ),
    (
        "RK-DOM012",
        E,
        '{field_ja}は暦にない日付です。そのまま保持する指定（asGiven="true"）を付けてください。',
        '{field_en} is not a calendar date; it must be marked asGiven="true".',
    ),
    (
        "RK-DOM013",
        E,
        "{field_ja}の西暦日付（iso 属性 {actual}）が表記（{expected}）と一致しません。",
        "{field_en}: the iso attribute ({actual}) does not match the written date ({expected}).",
    ),
    (
        "RK-DOM020",
        E,
        "{field_ja}に使用できない文字があります（{actual}）。",
        "{field_en} contains a character outside the permitted repertoire ({actual}).",
    ),
    (
        "RK-DOM021",
        E,
        "{field_ja}の外字（私用領域の文字）に代替文字（alt 属性）がありません。",
        "{field_en} has a private-use (外字) character but no alt attribute.",
    ),
    (
        "RK-DOM022",
        E,
        "{field_ja}の異体字セレクタが基底文字の後にありません。",
        "{field_en} has a variation selector that does not follow a base character.",
    ),
    # --- AUT: authentication and authorization (default deny) -----------------------------
    (
        "RK-AUT001",
        E,
        "呼出し元を識別できません（有効な API キーがなく、送信元アドレスも許可されていません）。",
        "The caller is not recognised (no valid API key, and the source address is not allowed).",
    ),
    (
        "RK-AUT002",
        E,
        "ヘッダの送信元システム（{actual}）が認証されたシステムと一致しません。",
        "The Header's client system ({actual}) is not the authenticated system.",
    ),
    (
        "RK-AUT003",
        E,
        "システム {actual} は団体 {expected} の業務を扱いません。",
        "System {actual} does not act for tenant {expected}.",
    ),
    (
        "RK-AUT004",
        E,
        "システム {actual} には、団体 {tenant} の{service_ja}（{service}）の{direction_ja}権限がありません。",
        "System {actual} has no {direction_en} permission for the {service_en} ({service})"
        " of tenant {tenant}.",
    ),
    (
        "RK-AUT005",
        E,
        "団体コード {actual} は登録されていないか、停止中です。",
        "Tenant {actual} is unknown or disabled.",
    ),
    (
        "RK-AUT006",
        E,
        "WS-Security UsernameToken は PasswordDigest・Nonce・Created を備えていなければなりません。",
        "A WS-Security UsernameToken needs a PasswordDigest, a Nonce and a Created time.",
    ),
    (
        "RK-AUT007",
        E,
        "WS-Security UsernameToken の利用者名またはパスワードダイジェストが正しくありません。",
        "The WS-Security UsernameToken's username or password digest is not valid.",
    ),
    (
        "RK-AUT008",
        E,
        "UsernameToken の作成時刻 {actual} がハブの時刻から 5 分以上ずれています。",
        "The UsernameToken's Created time {actual} is more than 5 minutes from the hub's clock.",
    ),
    (
        "RK-AUT009",
        E,
        "UsernameToken の Nonce は既に使われています（リプレイ攻撃の疑い）。",
        "The UsernameToken's nonce was already used (a replay).",
    ),
    (
        "RK-AUT010",
        E,
        "システム {actual} の送信数が上限を超えました。時間をおいて再送してください。",
        "System {actual} exceeded its rate limit; send again later.",
    ),
    (
        "RK-AUT011",
        E,
        "操作者 {actual} には、団体 {tenant} の{permission_ja}権限がありません。",
        "Operator {actual} has no {permission_en} permission for tenant {tenant}.",
    ),
    (
        "RK-AUT012",
        E,
        "利用者名またはパスワードが正しくないか、アカウントが停止中です。",
        "Unknown username or wrong password, or the account is disabled.",
    ),
    (
        "RK-AUT013",
        E,
        "WS-Security の XML 署名（ds:Signature）はハブでは検証できないため受け付けません。",
        "A WS-Security XML Signature (ds:Signature) cannot be verified by the hub and is refused.",
    ),
    (
        "RK-AUT014",
        E,
        "ハブは現在、資格情報を検証できません。しばらくしてから再送してください。",
        "The hub cannot verify credentials now; send again later.",
    ),
    (
        "RK-AUT015",
        E,
        "この利用者の担当団体はすべて利用停止中のため、ログインできません。管理者に連絡してください。",
        "Every town this account acts for is disabled, so it cannot log in; contact the hub's "
        "administrator.",
    ),
    # --- TEN: tenants, operator accounts and credentials (administration) ------------------
    (
        "RK-TEN001",
        E,
        "{actual} は正しい全国地方公共団体コード（6 桁、検査数字付き）ではありません。",
        "{actual} is not a valid 全国地方公共団体コード (6 digits with its check digit).",
    ),
    (
        "RK-TEN002",
        E,
        "団体 {actual} は既に登録されています。",
        "Tenant {actual} is already configured.",
    ),
    (
        "RK-TEN003",
        E,
        "団体 {actual} は登録されていません。",
        "Tenant {actual} is not configured.",
    ),
    (
        "RK-TEN004",
        E,
        "テンプレート {actual} から作った設定が正しくありません（{expected}）。",
        "The configuration made from template {actual} is invalid: {expected}",
    ),
    (
        "RK-TEN005",
        E,
        "システム {actual} は設定にありません。",
        "System {actual} is not configured.",
    ),
    (
        "RK-TEN006",
        E,
        "利用者名 {actual} は使えません（英小文字・数字・._- の 3〜64 文字）。",
        "Username {actual} is not allowed (3–64 of a-z, 0-9, '.', '_', '-').",
    ),
    (
        "RK-TEN007",
        E,
        "パスワードは {expected} 文字以上にしてください。",
        "The password must have at least {expected} characters.",
    ),
    (
        "RK-TEN008",
        E,
        "操作者 {actual} は既に登録されています。",
        "Operator {actual} already exists.",
    ),
    (
        "RK-TEN009",
        E,
        "操作者 {actual} は登録されていません。",
        "Operator {actual} does not exist.",
    ),
    (
        "RK-TEN010",
        E,
        "API キー {actual} はありません。",
        "There is no API key {actual}.",
    ),
    (
        "RK-TEN011",
        E,
        "役割 {actual} はありません（viewer・operator・admin のいずれか）。",
        "There is no role {actual} (viewer, operator or admin).",
    ),
    (
        "RK-TEN012",
        E,
        "ファイル {actual} を PEM 形式のクライアント証明書として読み取れません。",
        "The file {actual} cannot be read as a PEM client certificate.",
    ),
    (
        "RK-TEN013",
        E,
        "この変更を準備している間に、ほかの操作で設定が更新されました（版 {actual}）。何も適用して"
        "いません。もう一度実行してください（新しい版の上に変更を作り直します）。",
        "The configuration was changed by another apply while this change was being made"
        " (version {actual}); nothing was applied. Run the command again (it then builds the"
        " change on the newer version).",
    ),
    (
        "RK-TEN014",
        E,
        "団体 {actual} は利用中です。脱退した団体のデータは、renkei tenants disable {actual} で"
        "停止してから削除してください。",
        "Tenant {actual} is still enabled; stop it with renkei tenants disable {actual} before"
        " removing its data.",
    ),
    (
        "RK-TEN015",
        E,
        "団体の配信待ち・配信不能が残っています（{actual}）。届けるか、renkei dlq redeliver・"
        "discard で処理してから、もう一度書き出して実行してください。",
        "The tenant still has pending or dead-lettered deliveries ({actual}); have them"
        " delivered, or redeliver or discard them (renkei dlq), then export again and retry.",
    ),
    (
        "RK-TEN016",
        E,
        "書き出し {actual} はハブの現在のデータと一致しません（{expected}）。何も削除していません。"
        "renkei tenants export で書き出し直し、その書き出しを引き渡してから実行してください。",
        "The export {actual} does not match the hub's data now ({expected}); nothing was"
        " removed. Export again with renkei tenants export, hand that export over, then retry.",
    ),
    (
        "RK-TEN017",
        E,
        "書き出し先 {actual} は空ではありません。新しいディレクトリを指定してください。",
        "The export directory {actual} is not empty; name a new directory.",
    ),
    (
        "RK-TEN018",
        W,
        "団体 {actual} のデータは {expected} に削除されています（renkei tenants purge）。利用を"
        "再開すると、削除前のメッセージと配信のない状態から新たに始まります（監査記録は続きます）。",
        "Tenant {actual}'s data was removed on {expected} (renkei tenants purge); re-enabled, it"
        " starts afresh, without its earlier messages and deliveries (its audit chain goes on).",
    ),
    # --- STO: the Message Store ----------------------------------------------------------------
    (
        "RK-STO001",
        E,
        "同じ messageId（{actual}）で内容の異なるメッセージが既に受け付けられています。",
        "A message with the same messageId ({actual}) but different content was already accepted.",
    ),
    (
        "RK-STO002",
        E,
        "メッセージ {actual} は保存されていません（保存期間を過ぎて削除された可能性があります）。",
        "Message {actual} is not in the store (it may have been purged after its retention).",
    ),
    (
        "RK-STO003",
        E,
        "messageId {actual} のメッセージが複数あります。団体コードを指定してください。",
        "Several stored messages have the id {actual}; name the tenant.",
    ),
    (
        "RK-STO004",
        E,
        "{actual} はメッセージ {expected} の配信先ではありません。",
        "{actual} is not a destination of message {expected}.",
    ),
    (
        "RK-STO005",
        E,
        "メッセージ {actual} には再送できる配信先がありません（照会、または配信先なし）。",
        "Message {actual} has no destination to replay to (an inquiry, or no subscriber).",
    ),
    (
        "RK-STO006",
        E,
        "配信 {actual} は配信不能の一覧にありません。",
        "Delivery {actual} is not in the Dead Letter Channel.",
    ),
    (
        "RK-STO007",
        E,
        "メッセージを保存できません（記憶領域の不足）。しばらくしてから再送してください。",
        "The message cannot be stored (storage full); send it again later.",
    ),
    (
        "RK-STO008",
        E,
        "メッセージストアに今は接続できません（データベースの停止、接続断、またはロック待ちの"
        "上限超過）。メッセージは保存されていません。しばらくしてから再送してください。",
        "The message store cannot be reached now (the database is down, its connections were "
        "lost, or a lock was not granted in time); nothing was stored. Send it again later.",
    ),
    (
        "RK-STO009",
        E,
        "{actual} は団体 {tenant} の {service} をもう受信できません（団体がそのシステムの利用を"
        "やめたか、受信の権限が狭められました）。何も再送していません（ほかの配信先は --to で"
        "指定してください）。",
        "{actual} no longer receives {service} for tenant {tenant} (the town left that system "
        "or its receive grant was narrowed); nothing was replayed (name other destinations "
        "with --to).",
    ),
    (
        "RK-STO010",
        E,
        "宛名番号 {actual} を読み取れません（数字 1〜64 桁で指定してください）。",
        "The 宛名番号 {actual} cannot be read (give 1 to 64 digits).",
    ),
    # --- AUD: the audit trail ---------------------------------------------------------------
    (
        "RK-AUD001",
        E,
        "団体 {actual} の監査記録の連鎖が seq {expected} で壊れています。",
        "The audit chain of tenant {actual} is broken at seq {expected}.",
    ),
    (
        "RK-AUD002",
        E,
        "監査記録 {actual} の seq {expected} が署名付きチェックポイントと一致しません。",
        "The audit chain {actual} does not match its signed checkpoint at seq {expected}.",
    ),
    (
        "RK-AUD003",
        E,
        "監査記録 {actual} がアンカーと矛盾します（seq {expected}：切り詰めまたは削除）。",
        "The audit chain {actual} contradicts the anchor directory at seq {expected} "
        "(truncated, or a checkpoint deleted).",
    ),
    (
        "RK-AUD004",
        E,
        "監査の署名鍵 {actual} を使用できません。",
        "The audit signing key {actual} cannot be used.",
    ),
    (
        "RK-AUD005",
        E,
        "アンカーファイル {actual} を書き込めません（既存のファイルは書き換えません）。",
        "The anchor file {actual} cannot be written (an existing file is never rewritten).",
    ),
    (
        "RK-AUD006",
        E,
        "アンカーディレクトリ（--anchor または RENKEI_AUDIT_ANCHOR_DIR）の検証には鍵が必要です。"
        "--key に公開鍵を指定してください。",
        "Verifying the anchor directory (--anchor or RENKEI_AUDIT_ANCHOR_DIR) needs the key: "
        "pass the public key with --key.",
    ),
    (
        "RK-AUD007",
        E,
        "監査の署名鍵が設定されていません。RENKEI_AUDIT_SIGNING_KEY に秘密鍵のパスを設定してください。",
        "No audit signing key is configured (set RENKEI_AUDIT_SIGNING_KEY to the private key).",
    ),
    (
        "RK-AUD008",
        E,
        "--resident（宛名番号）で絞り込むには --tenant に団体コードを指定してください。",
        "Filtering by --resident (宛名番号) needs the town's code in --tenant.",
    ),
    # --- RTE: routing ----------------------------------------------------------------------------
    (
        "RK-RTE001",
        W,
        "サービス {actual} の配信先がありません（団体 {expected}）。メッセージは保存だけして、配信しません。",
        "No subscriber for service {actual} (tenant {expected}); the message is stored only.",
    ),
    (
        "RK-RTE002",
        E,
        "照会 {actual} の回答システムが設定されていません（団体 {expected}）。",
        "No provider is configured for inquiry {actual} (tenant {expected}).",
    ),
    (
        "RK-RTE003",
        E,
        "relatesTo（{actual}）がこのメッセージ自身の messageId です。取消し・訂正の通知には元の通知の"
        " messageId を指定してください。",
        "relatesTo ({actual}) is this message's own messageId; a cancellation or correction "
        "names the messageId of the message it cancels or corrects.",
    ),
    (
        "RK-RTE004",
        W,
        "relatesTo の通知 {actual} は、この送信システムの通知として保存されていません（未着、"
        "保存期間の経過、または別のシステム・団体の通知）。配信先は経路表で決め、元の通知を待たずに"
        "配信します。",
        "relatesTo {actual} names no stored message of this sending system (not received yet, "
        "purged after its retention, or another system's or tenant's): the route table chose the "
        "destinations, and this message does not wait for that one.",
    ),
    (
        "RK-RTE005",
        W,
        "relatesTo の {actual} は照会または回答で、配信されたメッセージではありません。"
        "配信先は経路表で決めました。",
        "relatesTo {actual} names an inquiry or a reply, which is never delivered on: the route "
        "table chose the destinations.",
    ),
    (
        "RK-RTE006",
        W,
        "relatesTo の通知 {expected} の配信先 {actual} は、現在の設定ではこの団体の"
        "このサービスを受信しません（経路・団体・受信権限の変更）。そこへは配信しません。",
        "{actual}, a destination of relatesTo {expected}, no longer receives this service for "
        "this tenant in the configuration in force (its route, tenants or receive grant "
        "changed): this message is not delivered there.",
    ),
    # --- RPL: request-reply ----------------------------------------------------------------------
    (
        "RK-RPL001",
        E,
        "回答システム {actual} に接続できないか、時間内に応答がありません。",
        "The provider {actual} could not be reached or did not answer in time.",
    ),
    (
        "RK-RPL002",
        E,
        "回答システム {actual} の応答が不正です。",
        "The provider {actual} returned an invalid reply.",
    ),
    (
        "RK-RPL003",
        E,
        "回答システム {actual} が照会を拒否しました。",
        "The provider {actual} refused the inquiry.",
    ),
    (
        "RK-RPL004",
        E,
        "回答システム {actual} が混雑のため照会を受け付けませんでした。{expected} 秒後にもう一度照会してください。",
        "The provider {actual} is busy and asked to be called again in {expected} s (Retry-After).",
    ),
    # --- MAP: mapping files and translation -----------------------------------------------
    (
        "RK-MAP001",
        E,
        "変換定義ファイルに誤りがあります（{actual}）。",
        "The mapping file is invalid ({actual}).",
    ),
    (
        "RK-MAP002",
        E,
        "必須の入力項目{field_ja}がありません。",
        "The required input for {field_en} is missing.",
    ),
    (
        "RK-MAP003",
        E,
        "{field_ja}の値（{actual}）は変換表 {expected} にありません。",
        "{field_en}: the value {actual} is not in table {expected}.",
    ),
    (
        "RK-MAP004",
        E,
        "{field_ja}を暦の日付として解釈できません。",
        "{field_en} cannot be read as a calendar date.",
    ),
    (
        "RK-MAP005",
        E,
        "入力を {expected} として読み取れません（{actual}）。",
        "The input cannot be read as {expected} ({actual}).",
    ),
    (
        "RK-MAP006",
        E,
        "{field_ja}が桁数（{expected} バイト）を超えています（{actual}）。",
        "{field_en} is longer than its {expected} bytes ({actual}).",
    ),
    (
        "RK-MAP007",
        E,
        "{field_ja}の文字 {actual} は {expected} で表せません。",
        "{field_en}: the character {actual} cannot be encoded in {expected}.",
    ),
    (
        "RK-MAP008",
        E,
        "{field_ja}を関数 {expected} で変換できません。",
        "{field_en} could not be converted by function {expected}.",
    ),
    (
        "RK-MAP009",
        E,
        "{field_ja}を数値（{expected}）として解釈できません。",
        "{field_en} is not a valid {expected} number.",
    ),
    (
        "RK-MAP010",
        E,
        "{field_ja}の外字 {actual} が外字変換表 {expected} にありません。",
        "{field_en}: the private-use character {actual} is not in 外字 table {expected}.",
    ),
    (
        "RK-MAP011",
        E,
        "{field_ja}が書式 {expected} に合いません。",
        "{field_en} does not match the pattern {expected}.",
    ),
    (
        "RK-MAP012",
        E,
        "システム {actual} の変換定義 {expected} を使えません。",
        "The mapping {expected} of system {actual} cannot be used.",
    ),
    # load errors of a mapping file: path is file:line:column, detail the English specifics
    (
        "RK-MAP013",
        E,
        "変換定義ファイルを読めないか、YAML として正しくありません。",
        "The mapping file cannot be read or is not well-formed YAML.",
    ),
    (
        "RK-MAP014",
        E,
        "キー {actual} はここでは使えません（綴りを確認してください）。",
        "The key {actual} is not known here (check its spelling).",
    ),
    (
        "RK-MAP015",
        E,
        "{field_ja}はカタログにないか、サービス {expected} のここで使える項目ではありません。",
        "{field_en} is not a catalogue item that service {expected} has here.",
    ),
    (
        "RK-MAP016",
        E,
        "{field_ja}：操作または参照（表、関数、パス、形式）の指定が正しくありません。",
        "{field_en}: an operation or a reference (table, function, path, format) is set wrongly.",
    ),
    (
        "RK-MAP017",
        E,
        "{field_ja}：値の型が合いません（true/false、日付、コード、書式）。",
        "{field_en}: a value has the wrong type (true/false, date, code, pattern).",
    ),
    (
        "RK-MAP018",
        E,
        "{field_ja}：変換定義の組み立ての規則に反しています。",
        "{field_en}: a structural rule of mapping files is broken.",
    ),
    (
        "RK-MAP019",
        E,
        "{field_ja}の入力が値（文字列・数値・真偽値）ではなく JSON の {actual} です。",
        "{field_en}: the input is a JSON {actual}, not a value (string, number, true/false).",
    ),
    (
        "RK-MAP020",
        E,
        "{field_ja}（{actual} バイト目）の始まりか終わりが全角文字の途中にあります。固定長の桁は"
        "文字数ではなくバイト数で数えます（この符号化では全角 1 文字が {expected} バイト）。",
        "{field_en} (bytes {actual}) starts or ends inside a double-byte character: widths in a "
        "fixed-width layout count bytes, not characters (a full-width character is {expected} "
        "bytes in this encoding).",
    ),
    # --- IMP: batch imports (登記済通知 files); a record error never stops the file ----------
    (
        "RK-IMP001",
        E,
        "{line} 行目を {expected} として読めません（行内 {actual} バイト目）。",
        "Line {line} cannot be decoded as {expected} (byte {actual} of the line).",
    ),
    (
        "RK-IMP002",
        E,
        "{line} 行目の項目数が {actual} です（{expected} 項目のはずです）。",
        "Line {line} has {actual} fields ({expected} expected).",
    ),
    (
        "RK-IMP003",
        E,
        "{line} 行目のキー項目{field_ja}を解釈できません（{actual}）。",
        "Line {line}: the key field {field_en} cannot be read ({actual}).",
    ),
    (
        "RK-IMP004",
        E,
        "{line} 行目をハブが受け付けませんでした（{actual}：{reason_ja}）。",
        "Line {line} was refused by the hub ({actual}: {reason_en}).",
    ),
    (
        "RK-IMP005",
        E,
        "取込みの設定に誤りがあるため、取込みを始められません（{actual}）。",
        "The import cannot start: {actual}.",
    ),
    (
        "RK-IMP006",
        E,
        "{line} 行目を項目に分けられません（引用符の外に改行文字 CR があるか、項目が長すぎるか、行が 1 MiB を超えます）。",
        "Line {line} cannot be split into fields (a CR outside quotes, a field too long, or a line over 1 MiB).",
    ),
    (
        "RK-IMP007",
        E,
        "取込みの作業プロセスが止まりました（{actual}）。同じコマンドをもう一度実行すると続きから取り込みます。",
        "An import worker process stopped ({actual}); run the same command again to resume.",
    ),
    (
        "RK-IMP008",
        E,
        "宛名抽出ファイル（--residents）の見出し（1 行目）に列 {expected} がありません（見出し：{actual}）。何も投入していません。",
        "The 宛名 extract (--residents) has no column {expected} in its header, line 1 ({actual}); nothing was loaded.",
    ),
    (
        "RK-IMP009",
        W,
        "住民データの索引を読めません（{actual}）。名寄せをせずに取り込みます（照合結果は未照合）。",
        "The resident index cannot be read ({actual}); importing without owner matching (未照合).",
    ),
    (
        "RK-IMP010",
        E,
        "住民データの索引が壊れているため宛名抽出を投入できません（{actual}）。索引のファイルを削除してから同じコマンドをもう一度実行してください（索引は作り直されます）。",
        "The resident index is damaged, so the 宛名 extract cannot be loaded ({actual}); delete the index file and run the same command again (the index is rebuilt).",
    ),
    (
        "RK-IMP011",
        E,
        "{line} 行目の通知は、同じキー（受付年月日・受付番号・不動産番号）で内容の違う通知が既に"
        "取り込まれているため取り込めません。訂正の通知であれば、取込み済みの通知を確認してください。",
        "Line {line}: a notice with the same key (receipt date, receipt number, real-estate "
        "number) but other content was imported before; if this one corrects it, check the "
        "stored notice.",
    ),
    (
        "RK-IMP012",
        E,
        "見出し行の列が取込みの定義と違います（{actual}）。列の並びを確かめてください。",
        "The header row's columns differ from the layout's ({actual}); check the column order.",
    ),
    (
        "RK-IMP013",
        E,
        "このファイルは別の取込みが処理中です。終わってからもう一度実行してください。",
        "This file is being imported by another run; run the command again once it has ended.",
    ),
    (
        "RK-IMP014",
        E,
        "{line} 行目の長さが {actual} バイトです（{expected} バイトのはずです）。",
        "Line {line} is {actual} bytes long ({expected} bytes expected).",
    ),
    (
        "RK-IMP015",
        E,
        "ハブの保存先に空きがないため取込みを中断しました（{actual}）。空きを作ってから同じコマンドをもう一度実行すると続きから取り込みます。",
        "The import stopped: the hub's store has no room ({actual}); free space and run the same command again to resume.",
    ),
    (
        "RK-IMP016",
        E,
        "宛名抽出ファイル（--residents）の {line} 行目の{field_ja}が空か、使えない値です（値：{actual}、使える値：{expected}）。何も投入していません。",
        "Line {line} of the 宛名 extract (--residents): {field_en} is empty or not allowed (value: {actual}; allowed: {expected}); nothing was loaded.",
    ),
    (
        "RK-IMP017",
        W,
        "住民データの索引は以前の版の renkei が作ったもので、氏名・住所のそろえ方が古いままです（{actual}、キーの版 {version}、今の版 {expected}）。"
        "名寄せはしますが、一致するはずの所有者が不一致・住登外になることがあります。"
        "宛名抽出ファイルを付けて（--residents）取り込むと索引を作り直します"
        "（住民異動通知はハブに保存済みのものから読み直します）。",
        "The resident index was built by an older renkei and keeps keys normalised the old way "
        "({actual}, key version {version}, current {expected}); owners are matched, but some that should be 一致 may come out 不一致 or "
        "住登外. Import with the 宛名 extract (--residents) to rebuild it (the 住民異動通知 "
        "stored in the hub are read again).",
    ),
    # --- IO: reading inputs ------------------------------------------------------------------
    (
        "RK-IO001",
        E,
        "ファイルを読み込めません（{actual}）。",
        "The file cannot be read ({actual}).",
    ),
    (
        "RK-IO002",
        E,
        "出力フォルダを作れないか、書き込めません（{actual}）。何も取り込んでいません。",
        "The output folder cannot be created or written to ({actual}); nothing was imported.",
    ),
    (
        "RK-IO003",
        E,
        "出力ファイルを書けません（{actual}）。通知は取込み済みです。その名前のフォルダなどを"
        "取り除いてから同じコマンドをもう一度実行すると、出力を書きます。",
        "An output file cannot be written ({actual}); the notices were imported. Remove what is"
        " in the way (a folder of that name, say) and run the same command again to write the"
        " outputs.",
    ),
    # --- FIL: file linkage (hot folders) ------------------------------------------------------
    (
        "RK-FIL001",
        E,
        "見出しレコード（先頭行）がないか、形式が正しくありません（{actual}）。",
        "The header record (first line) is missing or malformed ({actual}).",
    ),
    (
        "RK-FIL002",
        E,
        "後書きレコード（最終行）がないか、件数が読み取れません（{actual}）。",
        "The trailer record (last line) is missing or its record count is unreadable ({actual}).",
    ),
    (
        "RK-FIL003",
        E,
        "後書きレコードの件数（{expected}）と実際のレコード数（{actual}）が一致しません。ファイル全体を取り込みません。",
        "The trailer's record count ({expected}) does not match the records in the file ({actual}); nothing was taken.",
    ),
    (
        "RK-FIL004",
        E,
        "全件・差分の区分（{actual}）が正しくありません（{expected}）。",
        "The full/differential flag ({actual}) is not one of {expected}.",
    ),
    (
        "RK-FIL005",
        E,
        "システム {actual} の変換定義に {expected} の受信側（inbound）定義がありません。",
        "The mapping of system {actual} has no inbound section for {expected}.",
    ),
    (
        "RK-FIL006",
        E,
        "フォルダ {actual} を使えません（{expected}）。このフォルダは次の周期に再試行し、ほかのフォルダの処理は続けます。",
        "The folder {actual} cannot be used ({expected}); it is retried at the next poll and the other folders are served meanwhile.",
    ),
    (
        "RK-FIL007",
        W,
        "ファイル {actual} を読み込めません（{expected}）。一時的な障害とみて、間隔を延ばしながら再試行します。",
        "The file {actual} cannot be read ({expected}); taken as a passing fault, it is retried at growing intervals.",
    ),
    (
        "RK-FIL008",
        E,
        "ファイル {actual} を読み込めないため、1 件も取り込まずに error/ へ移しました（{expected}）。原因を取り除いてから受信フォルダに置き直してください。",
        "The file {actual} cannot be read ({expected}); it was moved to error/ and nothing of it was taken. Remove the cause, then put the file back in the folder.",
    ),
    # --- FED: PULL feeds ------------------------------------------------------------------------
    (
        "RK-FED001",
        E,
        "続き位置（カーソル）が正しくないか、このフィード（{expected}）のものではありません。",
        "The cursor is malformed or does not belong to this feed ({expected}).",
    ),
    (
        "RK-FED002",
        E,
        "システム {actual} には、団体 {tenant} の {service} のフィードを読む権限がありません"
        "（経路・アクセス規則がないか、団体が停止中です）。",
        "System {actual} may not read the {service} feed of tenant {tenant} (no route or access"
        " rule grants it, or the tenant is disabled).",
    ),
    (
        "RK-FED003",
        E,
        "カーソルより後のメッセージの一部が保存期間を過ぎて削除されました。全件出力から取り直してください。",
        "Messages after this cursor were purged after their retention; start again from a full export.",
    ),
    (
        "RK-FED004",
        E,
        "呼出し元が複数のシステム（{actual}）に該当します。system パラメータで指定してください。",
        "The caller matches several systems ({actual}); name one with the system parameter.",
    ),
    (
        "RK-FED005",
        E,
        "パラメータ {actual} が正しくありません（{expected}）。",
        "Parameter {actual} is invalid ({expected}).",
    ),
    (
        "RK-FED006",
        E,
        "呼出し元はシステム {actual} ではありません。system には呼出し元自身のシステムを指定してください。",
        "The caller is not the system {actual}; system= names one of the caller's own systems.",
    ),
    # --- API: HTTP edges ---------------------------------------------------------------------
    (
        "RK-API001",
        E,
        "対応していない Content-Type です（{actual}）。",
        "Unsupported Content-Type ({actual}).",
    ),
    (
        "RK-API002",
        E,
        "サービス {actual} はありません。",
        "There is no service named {actual}.",
    ),
    (
        "RK-API003",
        E,
        "内部エラーが発生しました（参照番号 {actual}）。詳細はハブのログにあります。",
        "Internal error (reference {actual}); the hub's log has the details.",
    ),
    (
        "RK-API004",
        E,
        "JSON 形式のメッセージを XML に変換できません（{actual}）。",
        "The JSON form cannot be converted to the platform XML ({actual}).",
    ),
    (
        "RK-API005",
        E,
        "この URL は SOAP 要求（POST）用です。WSDL は {expected} にあります。",
        "This URL takes SOAP requests (POST); the WSDL is at {expected}.",
    ),
    (
        "RK-API006",
        E,
        "{actual} という URL はありません。",
        "There is nothing at the URL {actual}.",
    ),
    (
        "RK-API007",
        E,
        "この URL ではメソッド {actual} は使えません（使えるもの：{expected}）。",
        "Method {actual} is not allowed at this URL (allowed: {expected}).",
    ),
    (
        "RK-API008",
        E,
        "要求のパラメータが正しくありません（{actual}）。",
        "A request parameter is not valid ({actual}).",
    ),
    (
        "RK-API009",
        E,
        "対応していない Content-Encoding です（{actual}）。使えるのは gzip と identity です。",
        "Unsupported Content-Encoding ({actual}); gzip and identity are accepted.",
    ),
    (
        "RK-API010",
        E,
        "gzip で圧縮された本文を展開できません（{actual}）。",
        "The gzip-compressed body cannot be decompressed ({actual}).",
    ),
    (
        "RK-API011",
        E,
        "対応していない charset です（{actual}）。文字コードは UTF-8 だけを受け付けます。",
        "Unsupported charset ({actual}); only UTF-8 is accepted.",
    ),
    (
        "RK-API012",
        E,
        "Content-Type の charset（{actual}）が文書自身の文字コード（{expected}）と矛盾します。",
        "The Content-Type charset ({actual}) contradicts the document's own encoding ({expected}).",
    ),
    (
        "RK-API013",
        E,
        "要求された形式（Accept ヘッダの {actual}）では応答できません（使えるもの：{expected}）。",
        "No acceptable response for Accept: {actual} (available: {expected}).",
    ),
    (
        "RK-API014",
        E,
        "要求の本文が届き終わる前に接続が切れました（受信 {actual} バイト）。",
        "The connection closed before the request body was complete ({actual} bytes received).",
    ),
    (
        "RK-API015",
        E,
        "JSON のキー {field_en}（{field_ja}）が同じオブジェクトに二度以上あります。どちらの値か決められないため、キーを一つにして再送してください。",
        "The JSON key {field_en} appears more than once in one object; which value is meant is ambiguous. Send it again with the key once.",
    ),
    (
        "RK-API016",
        E,
        "{field_ja}は文字列の項目です。JSON の{actual}ではなく文字列で送ってください（数値では先頭の 0 が失われます）。",
        "{field_en} is a text item: send it as a JSON string, not a JSON {actual} (a number loses leading zeros).",
    ),
    (
        "RK-API017",
        E,
        "大きな文書の解析に使えるメモリ（{limit} MiB）に今は空きがありません。しばらくしてから再送してください。",
        "The memory for parsing large documents ({limit} MiB) is in use now; resend later.",
    ),
    # --- OPS: readiness of a running hub (/readyz) -----------------------------------------
    (
        "RK-OPS001",
        E,
        "データベースに接続できません（{actual}）。",
        "The database cannot be reached ({actual}).",
    ),
    (
        "RK-OPS002",
        E,
        "メッセージブローカーに接続できません（{actual}）。",
        "The message broker cannot be reached ({actual}).",
    ),
    (
        "RK-OPS003",
        E,
        "設定が読み込まれていません（{actual}）。",
        "No configuration is loaded ({actual}).",
    ),
    (
        "RK-OPS004",
        E,
        "配信ワーカーが動いていません（{actual}）。受け付けたメッセージは配信されません。",
        "The dispatch workers are not running ({actual}); accepted messages are not delivered.",
    ),
    (
        "RK-OPS005",
        E,
        "保存済みの WS-Security 秘密を復号できません（{actual}）。バックアップの secrets.key を"
        "戻すか RENKEI_SECRETS_KEY を設定してから起動してください。",
        "The stored WS-Security secrets cannot be decrypted ({actual}); restore secrets.key from"
        " the backup or set RENKEI_SECRETS_KEY, then start again.",
    ),
    (
        "RK-OPS006",
        W,
        "この設定にない接続システム宛ての未完了の配信があります（{actual}）。送信の順になると、"
        "送られずに配信不能（permanent）になります（同じ宛名の後続は、その後ろで待ちます）。"
        "設定に戻して renkei dlq redeliver で再送するか、renkei dlq discard で破棄してください。",
        "Unfinished deliveries are addressed to systems this configuration no longer has"
        " ({actual}). When their turn comes they are dead-lettered unsent (permanent; later ones"
        " of the same subject wait behind them): add the system back and renkei dlq redeliver"
        " them, or renkei dlq discard them.",
    ),
    (
        "RK-OPS007",
        E,
        "メッセージストアに書き込めません（{actual}）。データディレクトリの空き領域を確保してください。"
        "書き込めるようになると自動で復旧します。",
        "The message store cannot be written ({actual}); free space in the data directory."
        " The hub recovers by itself once a write succeeds.",
    ),
    (
        "RK-OPS008",
        E,
        "このデータベースは renkei のメッセージストアではありません（{actual}）。何も変更していません。"
        "RENKEI_DATABASE_URL / RENKEI_DATA_DIR が空のデータベースか renkei のストアを指すようにしてください。",
        "This database is not a renkei message store ({actual}); nothing was changed. Point"
        " RENKEI_DATABASE_URL / RENKEI_DATA_DIR at an empty database or a renkei store.",
    ),
    (
        "RK-OPS009",
        E,
        "メッセージストアのスキーマ（{actual}）がこの renkei（{expected} まで）より新しい版のものです。"
        "このホストの renkei を更新してください。何も変更していません。",
        "The message store's schema ({actual}) is newer than this renkei knows (up to"
        " {expected}); upgrade renkei on this host. Nothing was changed.",
    ),
    (
        "RK-OPS010",
        E,
        "環境変数 {field_en} の値（{actual}）は使えません。使える値：{expected_ja}。何も実行していません。",
        "The environment variable {field_en} has a value that cannot be used ({actual});"
        " allowed: {expected_en}. Nothing was run.",
    ),
    (
        "RK-OPS011",
        W,
        "配信先 {actual} を一時停止しましたが、停止の前に取り出された配信 {expected} 件がまだ送信中です"
        "（送信中のものは届くことがあります。以後の配信は保留されます）。",
        "Destination {actual} is paused, but {expected} deliveries claimed before the pause are"
        " still being sent (they may still arrive; nothing more is sent).",
    ),
    (
        "RK-OPS012",
        E,
        "{actual} で待ち受けられません（{expected}）。ほかの renkei serve などがこのポートを"
        "使っていないか確かめてください。何も起動していません。",
        "Cannot listen on {actual} ({expected}); check that no other renkei serve or program"
        " uses this port. Nothing was started.",
    ),
    (
        "RK-OPS013",
        E,
        "メッセージストアがほかのプロセスにロックされています（{actual}）。ストアを使っているほかの"
        " renkei（更新前の renkei serve など）やプログラム（sqlite3 など）を止めてから、もう一度"
        "実行してください（動いているハブは自動で復旧します）。",
        "The message store is locked by another process ({actual}); stop the other renkei"
        " process (an old renkei serve, say) or program (a sqlite3 shell …) holding it, then run"
        " the command again (a running hub recovers by itself).",
    ),
    (
        "RK-OPS014",
        W,
        "TLS 証明書 {actual} の有効期限は {expected} です。期限が切れると接続できなくなります。"
        "新しい証明書に替えて renkei serve を再起動してください。",
        "The TLS certificate {actual} is valid until {expected}; once it expires no connection"
        " can be made. Replace it and restart renkei serve.",
    ),
    (
        "RK-OPS015",
        E,
        "メッセージストアに空きがなく、使えません（{actual}）。データディレクトリ（PostgreSQL"
        " ではそのディスク）の空き領域を確保してから、もう一度実行してください（動いているハブは"
        "自動で復旧します）。",
        "The message store has no room ({actual}); free space in the data directory (on"
        " PostgreSQL, its disk), then run the command again (a running hub recovers by itself).",
    ),
    (
        "RK-OPS016",
        E,
        "メッセージストアのテーブルがほかのセッションにロックされていて、待ちきれませんでした"
        "（{actual}）。データベースは動いています。pg_stat_activity でロックを持つセッションを探して"
        "終わらせるか終わるのを待ってから、もう一度実行してください（動いているハブは自動で復旧します）。",
        "A table of the message store is locked by another database session and the wait ran out"
        " ({actual}); the database is up. Find that session in pg_stat_activity and end it (or"
        " let it finish), then run the command again (a running hub recovers by itself).",
    ),
    (
        "RK-OPS017",
        W,
        "この設定には、直前の版にあった団体がありません（{actual}）。これらの団体のメッセージは"
        " RK-AUT005 で拒否されます。受付済みの配信は続きます。利用停止だけなら renkei tenants"
        " disable を使い、誤りなら団体のファイルを戻して renkei config apply してください。脱退なら"
        "運用手引きの「団体の脱退」に従い renkei tenants export・purge を実行してください。",
        "This configuration no longer has tenants the previous version had ({actual}); their"
        " messages are refused with RK-AUT005, deliveries already accepted go on. To stop a"
        " town, use renkei tenants disable; if this is a mistake, restore its file and run"
        " renkei config apply; if the town is leaving, follow 団体の脱退 in the operations guide"
        " (renkei tenants export, purge).",
    ),
    (
        "RK-OPS018",
        E,
        "この設定ディレクトリは版 {actual} を元に編集されていますが、その後に版 {version} までに"
        "適用された変更（{files}）がこのディレクトリにありません。適用するとその変更が失われるため、何も適用して"
        "いません。renkei config export で新しいディレクトリに最新の版を書き出し、自分の変更を移して"
        "から適用してください（git などでまとめてもかまいません）。その変更を取り消すつもりなら"
        " --force を付けます。",
        "This configuration directory was edited from version {actual}, but it lacks the"
        " changes applied up to version {version} ({files}): applying it would undo them, so"
        " nothing was applied."
        " Export the version in force into a new directory with renkei config export, carry"
        " your edit over (or merge with git) and apply that; add --force only to undo those"
        " changes on purpose.",
    ),
    (
        "RK-OPS019",
        E,
        "設定ディレクトリ {actual} には元にした版の記録（.renkei-base）がなく、--base-version の"
        "指定もないため、どの版を元に編集されたかが分かりません。ほかの人の変更を消さないよう、何も"
        "適用していません。renkei config export で書き出したディレクトリで編集する"
        "か、元にした版を --base-version で指定してください。ディレクトリの内容で置き換えるなら"
        " --force を付けます。",
        "The configuration directory {actual} has no record of the version it was made from"
        " (.renkei-base) and no --base-version was given, so it is not known which version it"
        " was edited from; nothing was applied, so as not to undo someone else's change. Edit a"
        " directory written by renkei config export, or name the version it was made from with"
        " --base-version; add --force to replace the configuration in force with it.",
    ),
    (
        "RK-OPS020",
        E,
        "この設定ディレクトリの元の版 {actual} は、このハブの版ではありません（適用中の版は {version}）。別のハブや"
        "データベースから書き出したディレクトリの可能性があります。何も適用していません。"
        "renkei config export で書き出し直すか、置き換えるなら --force を付けます。",
        "The version this configuration directory was made from, {actual}, is not one of this"
        " hub's (version {version} is in force): it may have been exported from another hub or database. Nothing was"
        " applied. Export again with renkei config export, or add --force to replace the"
        " configuration with it.",
    ),
    (
        "RK-OPS021",
        E,
        "{actual} には設定ファイル（*.yaml）が既にあります。書き出しは新しいか空のディレクトリに"
        "します。何も書いていません。",
        "{actual} already holds configuration files (*.yaml); export into a new or empty"
        " directory. Nothing was written.",
    ),
    (
        "RK-OPS022",
        W,
        "経路 {actual} の配信先 {expected} は、この経路の団体のどれについてもこのサービスを受信できない"
        "（団体を担当していないか、受信の許可がない）ため、何も届きません。配信先の誤りか、団体・"
        "許可の設定漏れでないか確かめてください。",
        "Route {actual}: its destination {expected} may receive the service for none of the"
        " route's tenants (it serves none of them, or holds no receive grant), so it gets"
        " nothing; check the destination, or the tenants and access it needs.",
    ),
    (
        "RK-OPS023",
        E,
        "移行先のデータベース {actual} は空ではありません（{tables}）。ストアのコピーは空のデータベースに"
        "だけ行います。何も書いていません。新しいデータベースを作るか、移行先に誤りがないことを確かめて"
        "から中身を消してください。",
        "The target database {actual} is not empty ({tables}); the store is copied into an empty"
        " database only. Nothing was written. Create a new database, or empty this one once you"
        " are sure it is the right one.",
    ),
    (
        "RK-OPS024",
        E,
        "コピー元のストア {actual} は使用中です（{holders}）。ハブ（renkei serve、renkei worker、"
        "renkei folders run）と取込を止めてから、もう一度実行してください。何も書いていません。",
        "The source store {actual} is in use ({holders}). Stop the hub (renkei serve, renkei"
        " worker, renkei folders run) and any import, then run the command again. Nothing was"
        " written.",
    ),
    (
        "RK-OPS025",
        E,
        "{actual} ではストアをコピーできません：{reason_ja}。何も書いていません。",
        "The store cannot be copied with {actual}: {reason_en}. Nothing was written.",
    ),
    (
        "RK-OPS026",
        E,
        "ストアのコピーが完了しませんでした（{actual}）。移行先への書き込みはすべて取消したので、"
        "移行先は空のままです。原因を取り除いてから同じコマンドをもう一度実行できます。コピー元は"
        "変わっていません。",
        "The store copy did not complete ({actual}). Everything written to the target was"
        " rolled back, so it is still empty: remove the cause and run the same command again."
        " The source store is unchanged.",
    ),
    (
        "RK-OPS027",
        W,
        "接続システム {actual} の送信先または変換定義が変わりました（{changes}）。未完了の配信"
        " {pending} 件は renkei destinations resume {actual} の後、新しい送信先へ新しい形式で送られます。"
        "配信不能 {dead} 件は renkei dlq list --destination {actual} で確かめ、renkei dlq redeliver"
        " で再送すると新しい送信先へ送られます（不要なものは renkei dlq discard）。",
        "System {actual} has a new endpoint or mapping ({changes}). Its {pending} pending"
        " deliveries go to the new endpoint in the new format after renkei destinations resume"
        " {actual}; its {dead} dead letters (renkei dlq list --destination {actual}) go there too"
        " when redelivered with renkei dlq redeliver (or renkei dlq discard them).",
    ),
    (
        "RK-OPS028",
        W,
        "接続システム {actual} の送信先または変換定義が、一時停止せずに変わりました（{changes}）。"
        "未完了の配信 {pending} 件は新しい送信先へ新しい形式で送られますが、適用の前に取り出されて"
        "送信中だった配信は旧送信先へ届くことがあります。旧システムに何も届いてはならない更改では、"
        "先に renkei destinations pause {actual} を実行してから適用してください。配信不能 {dead} 件は"
        " renkei dlq redeliver で新しい送信先へ再送できます。",
        "System {actual} got a new endpoint or mapping without a pause ({changes}). Its"
        " {pending} pending deliveries go to the new endpoint in the new format, but those"
        " claimed before the apply and being sent may still reach the old endpoint. When the old"
        " system must receive nothing more, run renkei destinations pause {actual} before"
        " applying. Its {dead} dead letters go to the new endpoint when redelivered (renkei dlq"
        " redeliver).",
    ),
    (
        "RK-OPS029",
        E,
        "同時送信数の上限（max_in_flight）に {actual} は使えません。1 以上の整数を書いてください"
        "（上限を設けないなら、この行を消します）。",
        "max_in_flight (同時送信数の上限) cannot be {actual}: write a whole number of at least 1"
        " (or remove the line for no limit).",
    ),
    (
        "RK-OPS030",
        E,
        "ストア {actual} は使用中です（{holders}）。この圧縮（ファイルの作り直し）はハブ（renkei serve、"
        "renkei worker、renkei folders run）と取込を止めてから行います。何も変えていません。止めてから"
        "もう一度実行してください（一度作り直したストアは、次からハブを止めずに圧縮できます）。",
        "The store {actual} is in use ({holders}). This compaction rebuilds the file, with the hub"
        " (renkei serve, renkei worker, renkei folders run) and any import stopped. Nothing was"
        " changed: stop them and run the command again (a store rebuilt once is compacted"
        " without stopping the hub from then on).",
    ),
    (
        "RK-OPS031",
        E,
        "{actual} の空きが足りないため、ストアを圧縮できません（必要 {needed}、空き {free}）。"
        "何も変えていません。ほかのファイル（古いバックアップなど）を移して空きを作ってから、もう一度"
        "実行してください。",
        "The store cannot be compacted: {actual} has {free} free, {needed} is needed. Nothing"
        " was changed: make room (move old backups elsewhere, say) and run the command again.",
    ),
    # --- CON: the web console (運用コンソール) ------------------------------------------------
    (
        "RK-CON001",
        E,
        "フォームの有効期限が切れたか、正しくありません。画面を開き直してから操作してください。",
        "The form has expired or is not valid; reload the page and try again.",
    ),
    (
        "RK-CON002",
        E,
        "理由を {limit} 文字以内で入力してください（必須）。",
        "A reason is required (at most {limit} characters).",
    ),
    (
        "RK-CON003",
        E,
        "対象が選択されていません。選択してから、もう一度操作してください。",
        "Nothing was selected; select something and try again.",
    ),
    (
        "RK-CON004",
        E,
        "日付 {actual} を読み取れません（例：令和8年11月26日、2026-11-26）。",
        "The date {actual} cannot be read (e.g. 令和8年11月26日, 2026-11-26).",
    ),
    (
        "RK-CON005",
        E,
        "このアカウントへのログイン試行が多すぎます（1 分間に {limit} 回まで）。しばらく待ってから、もう一度ログインしてください。",
        "Too many login attempts for this account (at most {limit} a minute); wait a moment and log in again.",
    ),
    (
        "RK-CON006",
        E,
        "期間の開始日 {actual} が終了日 {expected} より後です。期間を入力し直してください。",
        "The start day {actual} is after the end day {expected}; enter the period again.",
    ),
    (
        "RK-CON007",
        E,
        "{field_ja}に {actual} は選べません（選べるもの：{expected}）。",
        "{actual} is not a choice for {field_en} (choices: {expected}).",
    ),
    (
        "RK-CON008",
        E,
        "この端末からのログイン失敗が多すぎます（1 分間に {limit} 回まで）。しばらく待ってから、もう一度ログインしてください。",
        "Too many failed logins from this address (at most {limit} a minute); wait a moment and log in again.",
    ),
    (
        "RK-CON009",
        E,
        "配信不能の対象は、配信 ID か --all（--tenant / --destination / --why で絞り込み）のどちらか一方で指定してください（{actual}）。",
        "Name the dead letters either by delivery id or with --all (narrowed by --tenant / "
        "--destination / --why), not both and not neither ({actual}).",
    ),
    (
        "RK-CON010",
        E,
        "{actual} に使えない文字（制御文字または文字の向きを変える文字）が含まれています。入力し直してください。",
        "{actual} holds a character that cannot be used (a control or text-direction "
        "character); type it again.",
    ),
    (
        "RK-CON011",
        E,
        "日付 {actual} はその元号の期間にありません（{expected}）。西暦か、その日の元号で入力し直してください。",
        "The date {actual} lies outside its era ({expected}); enter it in 西暦 or in the era of "
        "that day.",
    ),
)

_FORMAT_FIELDS = re.compile(r"{(\w+)}")


def lookup(code: str) -> ErrorCode:
    try:
        return REGISTRY[code]
    except KeyError:
        raise UnknownErrorCode(code) from None


def make_finding(
    code: str,
    *,
    path: str,
    item: str | None = None,
    name_ja: str | None = None,
    rule: str | None = None,
    value_masked: str | None = None,
    severity: Severity | None = None,
    detail: str | None = None,
    **params: Any,
) -> Finding:
    """Build a :class:`Finding` from a registered code; ``severity`` overrides the default
    (e.g. the 宛名番号 check configured as an error)."""
    entry = lookup(code)
    values = {"field_ja": name_ja or item or path, "field_en": item or path, **params}
    missing = {
        name
        for template in (entry.message_ja, entry.message_en)
        for name in _FORMAT_FIELDS.findall(template)
    } - values.keys()
    values.update(dict.fromkeys(missing, "?"))
    return Finding(
        code=code,
        severity=severity or entry.severity,
        path=path,
        item=item,
        name_ja=name_ja,
        rule=rule,
        value_masked=value_masked,
        message_ja=entry.message_ja.format(**values),
        message_en=entry.message_en.format(**values),
        detail=detail,
    )
