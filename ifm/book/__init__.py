"""The book: studies (one per paper item), statistics and verdict rules, the scorecard, the
paragraphs, tables and figures the pages show, the overview and the paper's numbers.

The book shows every table whole: pandas would cut a cell after 50 characters, and a table after
60 rows or 20 columns, with "...", and the cut text is often the evidence (a difference, its
interval, its p) or a run the reader looks for. Set on import, since every page imports the book.
"""
import pandas as _pd

for _option in ("display.max_colwidth", "display.max_rows", "display.max_columns"):
    _pd.set_option(_option, None)
