"""carepath: the names shared by every layer. Importing it loads no layer (cheap at start-up)."""

from .errors import Category, Error, Problem, code_table, error_classes, error_document, exit_code

__all__ = ["Category", "Error", "Problem", "code_table", "error_classes", "error_document", "exit_code"]
