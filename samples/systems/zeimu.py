"""税務システム (zeimu): 個人住民税・法人住民税, a sample SOAP system (spyne, code-first).

It takes the notifications the tax office subscribes to (住民異動通知, 収納情報通知, 滞納処分通知,
国保資格異動通知, 固定資産評価変更通知) and answers 課税情報照会 (TaxAssessmentInquiry) from its own
SQLite assessment table, seeded with sample assessments on first start.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from spyne import ComplexModel, ServiceBase, Unicode, rpc

from samples.systems.received import ReceivedLog
from samples.systems.soap_vendor import SoapSystem, header_types, record_notice, reply_header

NAMESPACE = "urn:sample:zeimu:soap:1"
SYSTEM = "zeimu"
HEADER = header_types(NAMESPACE)
TOWN = {"min_occurs": 1, "pattern": "[0-9]{6}"}
ATENA = {"pattern": "[0-9]{1,15}"}
TAX_ITEM = {"pattern": "[0-9]{2}"}
YEAR = {"pattern": "[0-9]{4}"}
AMOUNT = {"pattern": "[0-9]{1,15}"}

# (town, 宛名番号, 税目, 年度, 氏名, 住所, 総所得金額, 所得割額, 均等割額)
SEED_ASSESSMENTS = [
    (
        "412066",
        "100000000000008",
        "01",
        "2025",
        "佐賀　太郎",
        "佐賀県佐賀市城内一丁目1番1号",
        "4200000",
        "280000",
        "5000",
    ),
    (
        "412074",
        "100000000000024",
        "01",
        "2025",
        "唐津　一郎",
        "佐賀県唐津市栄町2588番地3",
        "3100000",
        "195000",
        "5000",
    ),
]


class Assessments:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS assessments (town, addressee_number, tax_item, tax_year,"
            " name, address, total_income, income_levy, per_capita_levy,"
            " PRIMARY KEY (town, addressee_number, tax_item, tax_year))"
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO assessments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            SEED_ASSESSMENTS,
        )

    def find(self, town: str, number: str, tax_item: str, year: str) -> Any:
        with self._lock:
            return self._db.execute(
                "SELECT name, address, total_income, income_levy, per_capita_levy"
                " FROM assessments WHERE town = ? AND addressee_number = ? AND tax_item = ?"
                " AND tax_year = ?",
                (town, number, tax_item, year),
            ).fetchone()


class ResidentChange(ComplexModel):  # 住民異動通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(min_occurs=1, **ATENA)
    changeReason = Unicode(min_occurs=1, pattern="[0-9]{3}")
    changeDate = Unicode(min_occurs=1, max_len=40)
    name = Unicode(max_len=100)
    nameKana = Unicode(max_len=100)
    postalCode = Unicode(pattern="[0-9]{7}")
    address = Unicode(max_len=200)


class Payment(ComplexModel):  # 収納情報通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(**ATENA)
    corporateNumber = Unicode(pattern="[0-9]{13}")
    taxItem = Unicode(min_occurs=1, **TAX_ITEM)
    fiscalYear = Unicode(min_occurs=1, **YEAR)
    installmentPeriod = Unicode(pattern="[0-9]{2}")
    paymentDate = Unicode
    paymentAmount = Unicode(**AMOUNT)


class DelinquencyAction(ComplexModel):  # 滞納処分通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(**ATENA)
    corporateNumber = Unicode(pattern="[0-9]{13}")
    taxItem = Unicode(**TAX_ITEM)
    fiscalYear = Unicode(**YEAR)
    actionKind = Unicode(min_occurs=1)
    delinquentAmount = Unicode(**AMOUNT)


class NhiEligibility(ComplexModel):  # 国保資格異動通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(min_occurs=1, **ATENA)
    insuredNumber = Unicode(min_occurs=1)
    qualificationAcquiredDate = Unicode
    qualificationLostDate = Unicode


class PropertyValuationChange(ComplexModel):  # 固定資産評価変更通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(min_occurs=1, **ATENA)
    assetClass = Unicode(min_occurs=1)
    fiscalYear = Unicode(min_occurs=1, **YEAR)
    assessedValue = Unicode(**AMOUNT)


class AssessmentQuery(ComplexModel):  # 課税情報照会
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(**TOWN)
    addresseeNumber = Unicode(min_occurs=1, **ATENA)
    taxItem = Unicode(min_occurs=1, **TAX_ITEM)
    taxYear = Unicode(min_occurs=1, **YEAR)


class AssessmentAnswer(ComplexModel):
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(min_occurs=1)
    addresseeNumber = Unicode(min_occurs=1)
    taxItem = Unicode(min_occurs=1)
    taxYear = Unicode(min_occurs=1)
    name = Unicode
    address = Unicode
    totalIncome = Unicode
    incomeLevyAmount = Unicode
    perCapitaLevyAmount = Unicode


def build(data_dir: Path, path: str = f"/{SYSTEM}") -> SoapSystem:
    assessments = Assessments(data_dir / "zeimu-assessments.db")
    log = ReceivedLog(data_dir / "zeimu-received.db", SYSTEM)

    class TaxService(ServiceBase):
        __in_header__ = HEADER.header
        __out_header__ = HEADER.header

        @rpc(ResidentChange, _body_style="bare")
        def ResidentChangeNotice(ctx: Any, notice: ResidentChange) -> None:
            record_notice(log, ctx, notice)

        @rpc(Payment, _body_style="bare")
        def PaymentNotice(ctx: Any, notice: Payment) -> None:
            record_notice(log, ctx, notice)

        @rpc(DelinquencyAction, _body_style="bare")
        def DelinquencyActionNotice(ctx: Any, notice: DelinquencyAction) -> None:
            record_notice(log, ctx, notice)

        @rpc(NhiEligibility, _body_style="bare")
        def NhiEligibilityNotice(ctx: Any, notice: NhiEligibility) -> None:
            record_notice(log, ctx, notice)

        @rpc(PropertyValuationChange, _body_style="bare")
        def PropertyValuationChangeNotice(ctx: Any, notice: PropertyValuationChange) -> None:
            record_notice(log, ctx, notice)

        @rpc(AssessmentQuery, _body_style="bare", _returns=AssessmentAnswer)
        def TaxAssessmentInquiry(ctx: Any, query: AssessmentQuery) -> AssessmentAnswer:
            if ctx.in_header is not None:
                record_notice(log, ctx, query)
                ctx.out_header = reply_header(HEADER, ctx.in_header, SYSTEM)
            row = assessments.find(
                query.localGovernmentCode, query.addresseeNumber, query.taxItem, query.taxYear
            )
            answer = AssessmentAnswer(
                localGovernmentCode=query.localGovernmentCode,
                addresseeNumber=query.addresseeNumber,
                taxItem=query.taxItem,
                taxYear=query.taxYear,
            )
            if row is not None:
                answer.name, answer.address = row[0], row[1]
                answer.totalIncome, answer.incomeLevyAmount = row[2], row[3]
                answer.perCapitaLevyAmount = row[4]
            return answer

    return SoapSystem([TaxService], NAMESPACE, path, log)
