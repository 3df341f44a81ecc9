"""Attacks: model extraction and membership inference, each seeing only an `Oracle`."""
