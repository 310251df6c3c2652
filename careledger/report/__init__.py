"""The HTML report: the read models as charts and tables, for people who would rather look.

``data`` reads the aggregates (never a patient id), ``svg`` draws the charts and ``html``
assembles one self-contained page; ``careledger report`` wires them to the settings.
"""

from careledger.report.data import Report, collect
from careledger.report.html import render

__all__ = ["Report", "collect", "render"]
