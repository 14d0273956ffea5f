"""The book: studies (one per paper item), statistics and verdict rules, the scorecard, the
paragraphs, tables and figures the pages show, the overview and the paper's numbers."""
