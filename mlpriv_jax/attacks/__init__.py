"""Attacks: model extraction and (later) membership inference, each seeing only a Victim."""
