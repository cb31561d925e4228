"""Prompt sets: IOI, needle-in-a-haystack, repeated tokens, harmful/harmless instructions."""
