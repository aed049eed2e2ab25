"""Identities and their operational state: issued API keys, operator accounts, WS-Security
UsernameTokens, client certificates, rate limits and tenant onboarding (docs/security.md)."""

from bus.pipeline import Finding


class SecurityRefusal(ValueError):
    """A refused administrative operation; ``finding`` says why (coded)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding
