"""Batch imports (一括取込み): 登記済通知 files from the 法務局, read line by line into the one
pipeline, with owner matching (名寄せ) and the staff outputs (評価変更リスト, error report)."""
