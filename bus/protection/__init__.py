"""Data protection (個人情報保護): 項目制限 per destination and 支援措置 address withholding."""
