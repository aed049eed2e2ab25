"""One real hub server (uvicorn on a free 127.0.0.1 port) for the interoperability tests,
and per service the messages each stack sends: a valid one and one the hub refuses with a
known code (a rule the client stacks do not check themselves)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hub_server import HubServer, hub_server

# A sample each service refuses with the code in its name (DOM rules: no client checks them).
INVALID = {
    "ResidentChangeNotice": "invalid-RK-DOM002-my-number-check-digit.xml",
    "AddresseeInquiry": "invalid-RK-DOM002-my-number-check-digit.xml",
    "TaxAssessmentInquiry": "invalid-RK-DOM003-corporate-number-check-digit.xml",
    "LevyNotice": "invalid-RK-DOM003-corporate-number-check-digit.xml",
    "PaymentNotice": "invalid-RK-DOM003-corporate-number-check-digit.xml",
    "DelinquencyInquiry": "invalid-RK-DOM003-corporate-number-check-digit.xml",
    "DelinquencyActionNotice": "invalid-RK-DOM021-gaiji-without-alt.xml",
    "NhiEligibilityNotice": "invalid-RK-DOM021-gaiji-without-alt.xml",
    "RegistrationNotice": "invalid-RK-DOM001-local-government-code-check-digit.xml",
    "PropertyValuationChangeNotice": "invalid-RK-DOM001-local-government-code-check-digit.xml",
}


def expected_code(service: str) -> str:
    return "-".join(INVALID[service].split("-")[1:3])  # invalid-RK-DOM002-… → RK-DOM002


@pytest.fixture(scope="session")
def interop_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("interop")) as server:
        yield server
