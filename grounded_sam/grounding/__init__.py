"""Phrase-independent image index, and phrase-dependent scoring and selection."""
