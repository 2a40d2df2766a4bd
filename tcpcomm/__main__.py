"""
C{python -m tcpcomm}: the C{tcpcomm} command.
"""

from tcpcomm.cli import main

if __name__ == "__main__":
    main()
