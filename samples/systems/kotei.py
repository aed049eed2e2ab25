"""固定資産税システム (kotei): a sample fixed-asset-tax system, SOAP (spyne, code-first).

It takes 住民異動通知 (to keep its taxpayers' addresses) and 登記済通知 from 法務局 (changes of
ownership), and records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spyne import ComplexModel, ServiceBase, Unicode, rpc

from samples.systems.received import ReceivedLog
from samples.systems.soap_vendor import SoapSystem, header_types, record_notice

NAMESPACE = "urn:sample:kotei:soap:1"
SYSTEM = "kotei"
HEADER = header_types(NAMESPACE)


class TaxpayerChange(ComplexModel):  # 住民異動通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(min_occurs=1, pattern="[0-9]{6}")
    addresseeNumber = Unicode(min_occurs=1, pattern="[0-9]{1,15}")
    # the changes that matter to a taxpayer record: 転入, 転出, 死亡, 転居, 修正
    changeReason = Unicode(
        min_occurs=1, values=["101", "102", "201", "202", "203", "301", "302", "303", "304"]
    )
    changeDate = Unicode(min_occurs=1, max_len=40)
    name = Unicode(max_len=100)
    postalCode = Unicode(pattern="[0-9]{7}")
    address = Unicode(max_len=200)
    plannedDestinationAddress = Unicode(max_len=200)


class Registration(ComplexModel):  # 登記済通知
    __namespace__ = NAMESPACE
    localGovernmentCode = Unicode(min_occurs=1, pattern="[0-9]{6}")
    assetClass = Unicode(min_occurs=1, pattern="[0-9]")
    propertyLocation = Unicode(max_len=200)
    lotNumber = Unicode(max_len=40)
    buildingNumber = Unicode(max_len=40)
    realEstateNumber = Unicode(pattern="[0-9]{13}")
    registrationCause = Unicode(max_len=100)
    registrationCauseDate = Unicode(max_len=40)


def build(data_dir: Path, path: str = f"/{SYSTEM}") -> SoapSystem:
    log = ReceivedLog(data_dir / "kotei-received.db", SYSTEM)

    class FixedAssetTaxService(ServiceBase):
        __in_header__ = HEADER.header

        @rpc(TaxpayerChange, _body_style="bare")
        def ResidentChangeNotice(ctx: Any, notice: TaxpayerChange) -> None:
            record_notice(log, ctx, notice)

        @rpc(Registration, _body_style="bare")
        def RegistrationNotice(ctx: Any, notice: Registration) -> None:
            record_notice(log, ctx, notice)

    return SoapSystem([FixedAssetTaxService], NAMESPACE, path, log)
