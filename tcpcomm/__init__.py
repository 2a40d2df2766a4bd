"""
tcpcomm: TCP communication between processes on different hosts, on Twisted.

One server, many clients at once: line and echo protocols with half-close
and flow control done right, a C{twistd tcpcomm} plugin, a client module, and
testing helpers that start a real server on loopback.
"""

from tcpcomm._version import __version__
from tcpcomm.chat import ChatFactory, ChatProtocol
from tcpcomm.chatroom import ChatRoom
from tcpcomm.client import ConnectionFailed, exchange
from tcpcomm.connection import ConnectionFactory, ConnectionProtocol
from tcpcomm.echo import EchoFactory, EchoProtocol
from tcpcomm.framing import LineFramer
from tcpcomm.line import LineFactory, LineProtocol, echoLine
from tcpcomm.lineclient import LineClient, ReconnectingLineClient
from tcpcomm.relay import RelayFactory, RelayProtocol
from tcpcomm.stats import ServerStats

__all__ = [
    "ChatFactory",
    "ChatProtocol",
    "ChatRoom",
    "ConnectionFactory",
    "ConnectionFailed",
    "ConnectionProtocol",
    "EchoFactory",
    "EchoProtocol",
    "LineClient",
    "LineFactory",
    "LineFramer",
    "LineProtocol",
    "ReconnectingLineClient",
    "RelayFactory",
    "RelayProtocol",
    "ServerStats",
    "__version__",
    "echoLine",
    "exchange",
]
