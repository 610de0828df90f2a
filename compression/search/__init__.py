"""Architecture searches that train candidate students: above ``students`` and ``distill`` in the layering."""

from compression.search.binary_widths import (
    BinaryBudget,
    SearchResult,
    create_searched_student,
    search_binary_widths,
)

__all__ = ["BinaryBudget", "SearchResult", "create_searched_student", "search_binary_widths"]
