"""renkei samples: messages, configuration and sample connected systems."""
