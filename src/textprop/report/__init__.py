"""`textprop report`: a run's ledger rendered as one self-contained HTML page for review."""

from textprop.report.chart import Series, line_chart
from textprop.report.html import diff_table, render_report, write_report

__all__ = ["Series", "diff_table", "line_chart", "render_report", "write_report"]
