"""
The C{twistd tcpcomm} plugin: a shim naming L{tcpcomm.tap}, which is imported
only when the plugin is used, so C{twistd --help} stays cheap.
"""

from twisted.application.service import ServiceMaker

tcpcomm = ServiceMaker(
    "tcpcomm",
    "tcpcomm.tap",
    "A TCP server for many clients at once: line, echo, chat and relay modes.",
    "tcpcomm",
)
