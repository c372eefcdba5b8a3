"""Budbringer: a messaging and notification gateway for home–school communication."""

__version__ = "0.1.0"
