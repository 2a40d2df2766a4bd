"""
The C{twistd --reactor tcpcomm} plugin: a shim naming L{tcpcomm.leanreactor},
which is imported only when the reactor is chosen.
"""

from twisted.application.reactors import Reactor

tcpcomm = Reactor(
    "tcpcomm",
    "tcpcomm.leanreactor",
    "epoll reactor without a logging context per event (Linux; tcpcomm)",
)
