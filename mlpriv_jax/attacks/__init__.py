"""Attacks: model extraction and membership inference, each seeing only a Victim."""
