"""`loadstone import haproxy`: HAProxy configuration in, loadstone YAML and a report out.

parser.py     HAProxy's configuration language -> sections of directives (sans-IO)
keywords.py   the table of what each HAProxy keyword becomes
translate.py  sections -> a loadstone configuration mapping + report lines (sans-IO)
report.py     report lines and the error for files HAProxy refuses
files.py      the only I/O: HAProxy's load order of files and directories, map files
"""

from loadstone.importers.haproxy.files import ImportResult, import_haproxy
from loadstone.importers.haproxy.parser import ParseError
from loadstone.importers.haproxy.report import ReportLine, TranslationError

__all__ = ["ImportResult", "ParseError", "ReportLine", "TranslationError", "import_haproxy"]
