"""Credit reports: the full public credit report and the special report (专项信用报告 / 信用代证).

:mod:`catalogue` is the fields list kept as data; :mod:`issuing` builds a report from
the store and signs it; :mod:`document` is the signed document and its offline check
with the trust bundle alone; :mod:`register` answers verification codes and says what
has become of the included records; :mod:`rendering` writes and reads back PDF and HTML.
"""

from credex.node.reports.catalogue import FieldsList, FieldsListError
from credex.node.reports.document import CheckedReport, ReportInvalid, check_report
from credex.node.reports.issuing import Issued, Issuer, ReportRefused, ReportRequest, ReportUnavailable

__all__ = [
    "CheckedReport",
    "FieldsList",
    "FieldsListError",
    "Issued",
    "Issuer",
    "ReportInvalid",
    "ReportRefused",
    "ReportRequest",
    "ReportUnavailable",
    "check_report",
]
