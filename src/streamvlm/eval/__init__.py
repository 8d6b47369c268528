"""Evaluation: pairwise LLM judging, the long-stream policy study, VQA harnesses."""
